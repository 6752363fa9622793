//! The configuration file as written: every table refuses keys it does not know, and every
//! value a rule checks keeps its position in the file (`Spanned`), so that each error names
//! the key and its line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(super) type S<T> = Option<Spanned<T>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    pub version: Spanned<i64>,
    pub daemon: S<Daemon>,
    pub api: S<Api>,
    #[serde(default)]
    pub repository: BTreeMap<String, Spanned<Repository>>,
    #[serde(default)]
    pub source: BTreeMap<String, Spanned<Source>>,
    #[serde(default)]
    pub job: BTreeMap<String, Spanned<Job>>,
    pub alerts: S<Alerts>,
    #[serde(default)]
    pub channel: BTreeMap<String, Spanned<Channel>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Daemon {
    pub state_dir: S<String>,
    pub time_zone: S<String>,
    pub shutdown_grace: S<String>,
    pub catch_up: S<String>,
    pub catch_up_within: S<String>,
    pub max_concurrent_jobs: S<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Api {
    pub listen: S<String>,
    pub tls_cert_file: S<String>,
    pub tls_key_file: S<String>,
    #[serde(default)]
    pub tokens: Vec<Spanned<Token>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Token {
    pub name: Spanned<String>,
    pub role: Spanned<String>,
    pub file: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Repository {
    pub location: Spanned<String>,
    pub region: S<String>,
    pub endpoint: S<String>,
    pub access_key_id: S<String>,
    pub access_key_id_file: S<String>,
    pub access_key_id_env: S<String>,
    pub secret_access_key: S<String>,
    pub secret_access_key_file: S<String>,
    pub secret_access_key_env: S<String>,
    pub password: S<String>,
    pub password_file: S<String>,
    pub password_env: S<String>,
    pub key_file: S<String>,
    pub agent_file: S<String>,
    pub quota: S<String>,
    pub key_rotation: S<String>,
    pub retention: S<Retention>,
    pub pitr_window: S<String>,
    pub price: S<Price>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Retention {
    pub keep_last: S<i64>,
    pub keep_hourly: S<i64>,
    pub keep_daily: S<i64>,
    pub keep_weekly: S<i64>,
    pub keep_monthly: S<i64>,
    pub keep_yearly: S<i64>,
    pub keep_within: S<String>,
    #[serde(default)]
    pub keep_tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Price {
    pub per_gb_month: S<f64>,
    pub per_1000_writes: S<f64>,
    pub per_1000_reads: S<f64>,
    pub currency: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Source {
    pub kind: Spanned<String>,
    pub repository: Spanned<String>,
    pub rpo: S<String>,
    pub rto: S<String>,
    pub stanza: S<String>,
    pub dbname: S<String>,
    pub pgdata: S<String>,
    pub paths: S<Vec<String>>,
    pub retention: S<Retention>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Job {
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    pub source: S<String>,
    pub repository: S<String>,
    pub schedule: Spanned<String>,
    pub time_zone: S<String>,
    pub retries: S<i64>,
    pub retry_backoff: S<String>,
    pub timeout: S<String>,
    pub cycle: S<String>,
    pub restore_test: S<bool>,
    #[serde(default)]
    pub sql_checks: Vec<Spanned<SqlCheck>>,
    pub to: S<String>,
    pub after_backups: S<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SqlCheck {
    pub database: S<String>,
    pub sql: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Alerts {
    #[serde(default)]
    pub routes: BTreeMap<String, Spanned<Vec<String>>>,
    pub rule: S<Rules>,
    pub repeat_after: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Rules {
    #[serde(rename = "SizeAnomaly")]
    pub size_anomaly: S<Tolerance>,
    #[serde(rename = "DurationAnomaly")]
    pub duration_anomaly: S<Factor>,
    #[serde(rename = "QuotaHigh")]
    pub quota_high: S<Ratio>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Tolerance {
    pub tolerance: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Factor {
    pub factor: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Ratio {
    pub ratio: Spanned<f64>,
}

/// Every channel type's keys in one table; which belong to which type is checked after
/// parsing, with the key's line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Channel {
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    pub url: S<String>,
    pub url_file: S<String>,
    pub url_env: S<String>,
    pub routing_key: S<String>,
    pub routing_key_file: S<String>,
    pub routing_key_env: S<String>,
    pub host: S<String>,
    pub port: S<i64>,
    pub tls: S<String>,
    pub ca_file: S<String>,
    pub username: S<String>,
    pub password: S<String>,
    pub password_file: S<String>,
    pub password_env: S<String>,
    pub from: S<String>,
    pub to: S<Vec<String>>,
}
