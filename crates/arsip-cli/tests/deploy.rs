//! The deployment files are checked, not only shipped: the systemd units by
//! `systemd-analyze verify` (no warning allowed), the Kubernetes manifest parsed (PyYAML from
//! the test venv) and held to what running arsip safely needs, the Containerfile linted,
//! and the configuration inside the manifest resolved by `arsip config check`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

#[test]
fn the_systemd_units_verify_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_arsip");
    let mut units = Vec::new();
    for name in [
        "arsip.service",
        "arsip-verify.service",
        "arsip-verify.timer",
    ] {
        let text = std::fs::read_to_string(deploy().join("systemd").join(name)).unwrap();
        // The units name the installed binary; verify runs against this build.
        let text = text.replace("/usr/local/bin/arsip", bin);
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze (systemd) is on the machine");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    let service = std::fs::read_to_string(deploy().join("systemd/arsip.service")).unwrap();
    for key in [
        "User=arsip",
        "KillMode=mixed",
        "TimeoutStopSec=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=arsip",
    ] {
        assert!(service.contains(key), "arsip.service lacks {key}");
    }
}

/// The manifest as JSON documents.
fn manifests() -> Vec<serde_json::Value> {
    let python = arsip_testkit::venv_python();
    let out = Command::new(python)
        .args(["-c", "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(deploy().join("k8s/arsip.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn the_kubernetes_manifest_runs_two_locked_down_replicas() {
    let docs = manifests();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let sts = kind("StatefulSet");
    assert!(
        sts["spec"]["replicas"].as_u64().unwrap() >= 2,
        "HA needs two"
    );
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["args"][0], "serve");
    let image = c["image"].as_str().unwrap();
    assert!(
        !image.ends_with(":latest") && image.contains(':'),
        "pin the image: {image}"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert!(
            c[probe]["tcpSocket"].is_object(),
            "{probe}: every HTTP request needs a token, so TCP"
        );
    }
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > 300, "longer than the shutdown grace: {grace}");
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(
        mounts.contains(&"/var/lib/arsip"),
        "the state directory persists"
    );
    assert!(sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state");
}

#[test]
fn the_configuration_in_the_manifest_resolves() {
    let docs = manifests();
    let secret = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
    resolves_but_for_its_secret_files(secret["stringData"]["arsip.toml"].as_str().unwrap());
}

#[test]
fn the_configuration_in_the_readme_resolves() {
    let readme = std::fs::read_to_string(deploy().join("../README.md")).unwrap();
    let start = readme
        .find("<<'TOML'\n")
        .expect("the README's configuration")
        + "<<'TOML'\n".len();
    let end = start + readme[start..].find("\nTOML\n").unwrap();
    resolves_but_for_its_secret_files(&readme[start..end]);
}

/// `arsip config check` finds nothing wrong with `toml` but the secret files it names under
/// /etc/arsip, which live on the site, not here.
fn resolves_but_for_its_secret_files(toml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("arsip.toml");
    std::fs::write(&path, toml).unwrap();
    let a = common::Arsip::local(dir.path());
    let out = a.run(&[
        "config",
        "check",
        "--config",
        path.to_str().unwrap(),
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    // Its secret files live in the pod, not here: those are the only errors allowed.
    let others: Vec<&str> = err
        .lines()
        .filter(|l| {
            l.contains(": ") && !l.contains("/etc/arsip/") && !l.starts_with("arsip: error:")
        })
        .collect();
    assert!(others.is_empty(), "{err}");
}

#[test]
fn the_containerfile_builds_a_non_root_image_with_the_tools_arsip_needs() {
    let text = std::fs::read_to_string(deploy().join("Containerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(
        froms.last().unwrap().contains("debian:bookworm-slim"),
        "{froms:?}"
    );
    for pkg in ["ca-certificates", "tzdata", "postgresql-client"] {
        assert!(text.contains(pkg), "the image lacks {pkg}");
    }
    assert!(text.contains("--no-install-recommends") && text.contains("rm -rf /var/lib/apt/lists"));
    let user = text
        .lines()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("ADD ") && l.contains("://")),
        "no ADD of URLs"
    );
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/arsip\"]"));
}
