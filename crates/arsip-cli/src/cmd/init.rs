//! `arsip init`: create a repository, optionally with a full key file.

use anyhow::{Context, Result};
use arsip_ops::repo::{ChunkerParams, InitOptions};

use crate::cli::InitArgs;
use crate::ctx::{Ctx, Render};
use crate::{exit, secrets};

fn size_arg(s: &str, what: &str) -> Result<u32> {
    arsip_ops::repo::parse_size(s)
        .and_then(|n| u32::try_from(n).ok())
        .with_context(|| crate::usage!("{what}: {s:?} is not a size (bytes, or with K/M/G)"))
}

impl Render for arsip_ops::open::Initialized {
    fn human(&self) -> String {
        String::new()
    }
}

pub async fn run(ctx: &Ctx<'_>, a: &InitArgs) -> Result<u8> {
    let opts = InitOptions {
        chunker: ChunkerParams {
            min: size_arg(&a.chunk_min, "--chunk-min")?,
            avg: size_arg(&a.chunk_avg, "--chunk-avg")?,
            max: size_arg(&a.chunk_max, "--chunk-max")?,
        },
        compression_level: a.compression,
        pack_size: size_arg(&a.pack_size, "--pack-size")?,
        block_size: size_arg(&a.block_size, "--block-size")?,
        ..InitOptions::default()
    };
    let settings = ctx.store_settings()?;
    let password = secrets::password("new repository password: ", true)?;
    let (repo, created) = arsip_ops::open::init(
        &settings,
        &password,
        &opts,
        ctx.local_settings()?,
        arsip_ops::repo::clock::from_env(),
    )
    .await?;
    if let Some(out) = &a.key_file_out {
        let reserved = secrets::SecretFile::reserve(out)?;
        let (slot, file) = arsip_ops::keys::add_keyfile(&repo, "init key file").await?;
        reserved.write(&serde_json::to_vec_pretty(&file)?)?;
        ctx.info(format!(
            "wrote key file {} (slot {})",
            out.display(),
            slot.id
        ));
    }
    ctx.emit(&created)?;
    ctx.info(format!(
        "created arsip repository {} at {}",
        &created.repo_id[..8],
        created.location
    ));
    ctx.info("keep the password safe: without it (or a key file) the data cannot be recovered");
    Ok(exit::OK)
}
