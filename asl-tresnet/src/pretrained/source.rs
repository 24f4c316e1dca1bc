//! Where a model's weights are: a registry name, a local file or a hub repo, parsed from what a
//! user types, and found on disk (downloading into the hub cache when needed).

use std::path::{Path, PathBuf};

use super::config::CfgOverrides;
use super::hub::{HubConfig, HubError};
use super::registry::Pretrained;
use crate::{Error, Result};

fn unknown(msg: String) -> Error {
    Error::UnknownModel(msg)
}

/// Where `--model` points.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    Registry(&'static Pretrained),
    /// A local `.safetensors` (timm or the project's naming) or original `.pth`.
    File(PathBuf),
    /// `hf:ORG/REPO[@REVISION][:FILE]` (file default `model.safetensors`, revision `main`).
    Hub {
        repo: String,
        revision: String,
        file: String,
    },
}

impl ModelSource {
    /// Parses `hf:ORG/REPO[@REVISION][:FILE]`, else an existing path, else a registry name.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("hf:") {
            let (repo_rev, file) = match rest.split_once(':') {
                Some((r, f)) if !f.is_empty() => (r, f.to_string()),
                Some(_) => return Err(unknown(format!("{s:?}: empty file name after ':'"))),
                None => (rest, "model.safetensors".to_string()),
            };
            let (repo, revision) = match repo_rev.split_once('@') {
                Some((r, rev)) if !rev.is_empty() => (r, rev.to_string()),
                Some(_) => return Err(unknown(format!("{s:?}: empty revision after '@'"))),
                None => (repo_rev, "main".to_string()),
            };
            let valid = repo.split('/').count() == 2 && repo.split('/').all(|p| !p.is_empty());
            if !valid {
                return Err(unknown(format!(
                    "{s:?}: expected hf:ORG/REPO[@REVISION][:FILE], e.g. \
                     hf:timm/tresnet_m.miil_in1k or hf:me/my-model@v1:model.safetensors"
                )));
            }
            return Ok(ModelSource::Hub {
                repo: repo.to_string(),
                revision,
                file,
            });
        }
        if Path::new(s).exists() {
            return Ok(ModelSource::File(PathBuf::from(s)));
        }
        if let Some(p) = super::registry::lookup(s) {
            return Ok(ModelSource::Registry(p));
        }
        let looks_like_path = s.contains('/') || s.contains('\\') || s.contains('.');
        let names: Vec<&str> = super::registry::REGISTRY.iter().map(|p| p.name).collect();
        Err(unknown(if looks_like_path && !s.starts_with("timm/") {
            format!("model {s:?}: no such file")
        } else {
            format!(
                "unknown model {s:?}: not a file, not a registry name ({}), not hf:ORG/REPO \
                 (`asl-cli models` lists the registry)",
                names.join(", ")
            )
        }))
    }
}

/// The local file of a source (downloading into the hub cache when needed) and what the source
/// says about the model.
pub fn locate(source: &ModelSource, hub: &HubConfig) -> Result<(PathBuf, CfgOverrides)> {
    match source {
        ModelSource::File(p) => Ok((p.clone(), file_hints(p))),
        ModelSource::Hub {
            repo,
            revision,
            file,
        } => {
            let path = super::hub::fetch(hub, repo, revision, file)?;
            // timm repos describe the model in config.json; other repos may have none.
            let hints = match super::hub::fetch(hub, repo, revision, "config.json") {
                Ok(cfg) => {
                    let text = std::fs::read_to_string(&cfg).map_err(|e| Error::read(&cfg, e))?;
                    CfgOverrides::from_timm_config(&text).map_err(|e| e.context(repo))?
                }
                Err(HubError::NotFound { .. } | HubError::OfflineMiss { .. }) => {
                    CfgOverrides::default()
                }
                Err(e) => return Err(e.into()),
            };
            Ok((path, hints))
        }
        ModelSource::Registry(p) => {
            let repo = p.repo();
            match super::hub::fetch(hub, &repo, "main", p.file) {
                Ok(path) => Ok((path, p.overrides())),
                Err(HubError::NotFound { .. }) if !p.public => Err(Error::Unpublished {
                    name: p.name.to_string(),
                    message: unpublished_message(p, &repo),
                }),
                // Whatever else failed, say that the repo may not exist at all.
                Err(e) if !p.public => Err(Error::Unpublished {
                    name: p.name.to_string(),
                    message: format!(
                    "{e}\n(note: {} is not published by its authors; unless someone uploaded it \
                     to {repo}, convert the original checkpoint: `asl-cli convert {} -o \
                     model.safetensors`, then use --model ./model.safetensors)",
                    p.name,
                        p.original_file.unwrap_or("the original .pth")
                    ),
                }),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// What the registry knows about a local file: a paper checkpoint under its original name.
pub fn file_hints(path: &Path) -> CfgOverrides {
    path.file_name()
        .and_then(|n| super::registry::by_original_file(&n.to_string_lossy()))
        .map(Pretrained::overrides)
        .unwrap_or_default()
}

/// What to say when a registry entry's repo does not exist (yet): how to make it.
pub fn unpublished_message(p: &Pretrained, repo: &str) -> String {
    let original = p.original_file.unwrap_or("the original checkpoint");
    format!(
        "{name}: the hub repo {repo} does not exist (no public repository hosts the ASL paper's \
         {dataset} model). To use it, convert the original checkpoint and publish it (or point \
         --model at the converted file):\n  \
         asl-cli convert {original} -o model.safetensors\n  \
         huggingface-cli upload {repo} model.safetensors model.safetensors\n\
         Set {env}=YOUR_ORG to read {name} from YOUR_ORG/{name} instead of {repo}.",
        name = p.name,
        dataset = p.dataset,
        env = super::registry::ORG_ENV,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        let hub = |s: &str| ModelSource::parse(s).expect(s);
        assert_eq!(
            hub("hf:timm/tresnet_m.miil_in1k"),
            ModelSource::Hub {
                repo: "timm/tresnet_m.miil_in1k".into(),
                revision: "main".into(),
                file: "model.safetensors".into()
            }
        );
        assert_eq!(
            hub("hf:me/m@v1.0:weights/x.safetensors"),
            ModelSource::Hub {
                repo: "me/m".into(),
                revision: "v1.0".into(),
                file: "weights/x.safetensors".into()
            }
        );
        assert!(matches!(hub("tresnet_l-coco"), ModelSource::Registry(p) if p.arch == "tresnet_l"));
        assert!(matches!(
            hub("timm/tresnet_m.miil_in21k"),
            ModelSource::Registry(p) if p.num_classes == 11221
        ));
        let this_file = concat!(env!("CARGO_MANIFEST_DIR"), "/src/pretrained/source.rs");
        assert_eq!(hub(this_file), ModelSource::File(this_file.into()));
        for bad in ["hf:nope", "hf:a/b/c", "hf:a/b@", "hf:a/b:", "hf:/b"] {
            let e = ModelSource::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(bad), "{e}");
        }
        let e = ModelSource::parse("tresnet_q-coco")
            .expect_err("unknown")
            .to_string();
        assert!(
            e.contains("unknown model") && e.contains("tresnet_l-coco"),
            "{e}"
        );
        let e = ModelSource::parse("missing/model.safetensors").expect_err("no file");
        assert!(e.to_string().contains("no such file"));
    }

    #[test]
    fn unpublished_entries_explain_themselves() {
        let p = super::super::registry::lookup("tresnet_l-coco").expect("entry");
        let msg = unpublished_message(p, "asl-rs/tresnet_l-coco");
        for part in [
            "asl-rs/tresnet_l-coco",
            "MS_COCO_TRresNet_L_448_86.6.pth",
            "asl-cli convert",
            "huggingface-cli upload",
            "ASL_RS_HUB_ORG",
        ] {
            assert!(msg.contains(part), "{part} in {msg}");
        }
    }
}
