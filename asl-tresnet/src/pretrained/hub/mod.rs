//! A small Hugging Face hub client: one file of one model repository, into the cache shared
//! with Python's `huggingface_hub`.
//!
//! The download itself and the cache writes are the `hf-hub` crate's (0.5, blocking `ureq`
//! backend), so the layout is the one every Hugging Face client reads:
//!
//! ```text
//! <cache_dir>/models--ORG--NAME/
//!     blobs/<etag>                                  the content, named by its ETag
//!     refs/<revision>                               the commit a branch or tag pointed to
//!     snapshots/<commit>/<file> -> ../../blobs/<etag>
//! ```
//!
//! This module adds what `hf-hub` 0.5 lacks:
//! - **offline mode** (`HF_HUB_OFFLINE`): the cache only, never the network, and an error naming
//!   the repository, the file and the cache directory when the file is absent;
//! - **verification**: after a download the blob's size must equal the total the server announced
//!   in `Content-Range`, and, for LFS files (whose ETag is the content's sha256), the sha256 must
//!   match. A bad blob and its snapshot link are removed before [`HubError::Corrupt`] is returned,
//!   so the next run downloads afresh;
//! - **errors that say what to do**: HTTP 404, 401/403, cut connections and unusable answers each
//!   have their own [`HubError`] variant and message.
//!
//! An interrupted download never reaches `blobs/` or `snapshots/`: `hf-hub` writes into
//! `blobs/<etag>.part` and renames only when the transfer ends, and the next run resumes from the
//! `.part` file with a ranged request. If that resume went wrong (a server that ignores `Range`),
//! the size or sha256 check catches it and the bad blob is removed.
//!
//! **When the network is used.** A file already in the cache is returned without any request,
//! online or offline, as `hf-hub`'s `get` does: for a commit-hash revision the snapshot is
//! looked up directly, for a branch or tag through `refs/<revision>`. Unlike Python's client we
//! do not ask the hub whether a branch moved; pass a commit hash (or delete `refs/<revision>`)
//! to pick up a newer upload. Weights are loaded at every start, and a model should not need
//! the network, nor change under a user, once it has been downloaded.
//!
//! **Limits.** The announced size and ETag come from a metadata request of our own, which
//! `hf-hub` then repeats: if the repository changes between the two, the check reports
//! [`HubError::Corrupt`] and a rerun fetches the new file. `hf-hub` 0.5 sets no timeouts on
//! its HTTP client, so a server that stalls without closing the connection blocks the call.
//!
//! What this module is not: a general hub API (no listing, uploads, datasets or spaces).

use std::path::{Component, Path, PathBuf};

#[cfg(feature = "hub")]
mod download;

/// The revision used when none is given: the default branch of hub repositories.
pub const DEFAULT_REVISION: &str = "main";

/// The hub the Python client talks to when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where and how to fetch files: the hub endpoint, the local cache, credentials, offline mode.
///
/// Build it with [`HubConfig::from_env`] to share the user's Python cache and login, or fill
/// the fields directly (tests, embedding programs).
#[derive(Clone)]
pub struct HubConfig {
    /// Base URL of the hub, without a trailing slash (`https://huggingface.co`).
    pub endpoint: String,
    /// The hub cache directory: the one holding `models--ORG--NAME` folders.
    pub cache_dir: PathBuf,
    /// A hub access token, sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Use the cache only; never touch the network.
    pub offline: bool,
    /// Draw a progress bar on stderr while downloading (only when stderr is a terminal).
    pub progress: bool,
}

impl std::fmt::Debug for HubConfig {
    // By hand so that a logged configuration never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .finish()
    }
}

impl HubConfig {
    /// The configuration Python's `huggingface_hub` would use, read from the environment:
    ///
    /// - endpoint: `HF_ENDPOINT`, else `https://huggingface.co`;
    /// - cache: `HF_HUB_CACHE` (or the older `HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`,
    ///   where `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface`, itself defaulting to
    ///   `~/.cache/huggingface`;
    /// - token: `HF_TOKEN` (or the older `HUGGING_FACE_HUB_TOKEN`), else the file
    ///   `HF_TOKEN_PATH`, else `$HF_HOME/token` (what `huggingface-cli login` writes);
    /// - offline: `HF_HUB_OFFLINE` set to `1`, `true`, `yes` or `on` (any case);
    /// - progress: on.
    ///
    /// ```
    /// let cfg = asl_tresnet::pretrained::hub::HubConfig::from_env();
    /// assert!(!cfg.endpoint.ends_with('/'));
    /// ```
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let xdg_cache = var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                // No home directory at all (a bare container): a relative cache still works.
                std::env::home_dir().unwrap_or_default().join(".cache")
            });
            xdg_cache.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token_path = var("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| std::fs::read_to_string(token_path).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        HubConfig {
            endpoint: endpoint.trim().trim_end_matches('/').to_string(),
            cache_dir,
            token,
            offline,
            progress: true,
        }
    }
}

/// Why a file could not be fetched. Every message names the repository and file involved and
/// says what to try.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The hub answered 404: the repository, the revision or the file does not exist (or the
    /// repository is private and no token was sent).
    #[error(
        "`{file}` was not found in the Hugging Face repository `{repo}` at revision \
         `{revision}` (HTTP 404): check the repository name, the file name and the revision \
         (a private repository also answers 404 without a token: set HF_TOKEN)"
    )]
    NotFound {
        repo: String,
        revision: String,
        file: String,
    },
    /// The hub answered 401 or 403: the repository is private or gated, or the token is wrong.
    #[error(
        "the Hugging Face hub refused access to `{file}` in `{repo}` (HTTP {status}): the \
         repository is private or gated, or the token is invalid. Accept the model's terms on \
         its hub page if it is gated, and set HF_TOKEN (or run `huggingface-cli login`) with a \
         token that can read it"
    )]
    Unauthorized {
        repo: String,
        file: String,
        status: u16,
    },
    /// Offline mode is on and the file is not in the cache.
    #[error(
        "offline mode (HF_HUB_OFFLINE) is on and `{file}` of `{repo}` at revision `{revision}` \
         is not in the cache {cache_dir}: fetch it once with network access, or unset \
         HF_HUB_OFFLINE"
    )]
    OfflineMiss {
        repo: String,
        revision: String,
        file: String,
        cache_dir: PathBuf,
    },
    /// The hub could not be reached, or the connection broke during the download. The message
    /// says whether partial data was kept for a resume.
    #[error("{0}")]
    Network(String),
    /// The downloaded content does not match the size or sha256 the hub announced. The bad file
    /// has been removed from the cache.
    #[error(
        "the download of `{file}` from `{repo}` is corrupt ({reason}); it was removed from the \
         cache, run again to download it afresh"
    )]
    Corrupt {
        repo: String,
        file: String,
        reason: String,
    },
    /// The server answered, but not like a Hugging Face hub (missing `ETag`, `X-Repo-Commit`
    /// or `Content-Range`, an unexpected status, an unsafe commit or ETag).
    #[error(
        "unexpected answer from {url}: {reason}; is HF_ENDPOINT a Hugging Face hub, and is it \
         working? Try again later"
    )]
    BadResponse { url: String, reason: String },
    /// Another process holds the download lock of this blob.
    #[error(
        "another process is downloading the same file (lock {}); wait for it to finish, or \
         delete the lock file if no download is running",
        path.display()
    )]
    Locked { path: PathBuf },
    /// A repository, revision or file name that cannot be a hub name (and could escape the
    /// cache directory).
    #[error("invalid {what} `{name}`: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    /// This build has no hub client (asl-tresnet without its `hub` feature) and the file is
    /// not in the cache.
    #[error(
        "`{file}` of `{repo}` is not in the hub cache, and this build cannot download it \
         (asl-tresnet was built without its `hub` feature)"
    )]
    Disabled { repo: String, file: String },
    /// A file-system error in the cache (the message names the path).
    #[error("hub cache: {0}")]
    Io(#[from] std::io::Error),
}

/// The local path of `file` in the model repository `repo` at `revision` (a branch, tag or
/// commit hash; empty means [`DEFAULT_REVISION`]), downloading it into the cache when needed.
///
/// A cached file is returned without any network access (see the module docs). Offline, only
/// the cache is used and a miss is [`HubError::OfflineMiss`]. A fresh download is checked
/// against the announced size and, for LFS files, sha256 before its path is returned.
///
/// ```no_run
/// use asl_tresnet::pretrained::hub::{fetch, HubConfig};
/// let cfg = HubConfig::from_env();
/// let weights = fetch(&cfg, "timm/tresnet_m.miil_in21k", "main", "model.safetensors")?;
/// println!("{}", weights.display());
/// # Ok::<(), asl_tresnet::pretrained::hub::HubError>(())
/// ```
pub fn fetch(cfg: &HubConfig, repo: &str, revision: &str, file: &str) -> Result<PathBuf, HubError> {
    let revision = if revision.is_empty() {
        DEFAULT_REVISION
    } else {
        revision
    };
    validate_repo(repo)?;
    validate_revision(revision)?;
    validate_file(file)?;
    if let Some(path) = cached(cfg, repo, revision, file) {
        return Ok(path);
    }
    if cfg.offline {
        return Err(HubError::OfflineMiss {
            repo: repo.to_string(),
            revision: revision.to_string(),
            file: file.to_string(),
            cache_dir: cfg.cache_dir.clone(),
        });
    }
    download(cfg, repo, revision, file)
}

/// Downloads into the cache (the `hub` feature's client).
#[cfg(feature = "hub")]
fn download(cfg: &HubConfig, repo: &str, revision: &str, file: &str) -> Result<PathBuf, HubError> {
    download::download(cfg, repo, revision, file)
}

/// Without the `hub` feature there is no client: only cached files are found.
#[cfg(not(feature = "hub"))]
fn download(_: &HubConfig, repo: &str, _: &str, file: &str) -> Result<PathBuf, HubError> {
    Err(HubError::Disabled {
        repo: repo.to_string(),
        file: file.to_string(),
    })
}

/// The cache folder of a model repository: `models--ORG--NAME`, as every Hugging Face client
/// names it.
fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// The cached path of `file` in `repo` at `revision`, if it is in the cache (never touches the
/// network). A commit-hash revision is looked up directly in `snapshots/`, a branch or tag
/// through `refs/<revision>`; a snapshot link whose blob is gone counts as absent.
///
/// ```
/// use asl_tresnet::pretrained::hub::{cached, HubConfig};
/// let cfg = HubConfig {
///     endpoint: "https://huggingface.co".into(),
///     cache_dir: std::env::temp_dir().join("asl-hub-doc-empty-cache"),
///     token: None,
///     offline: true,
///     progress: false,
/// };
/// assert_eq!(cached(&cfg, "timm/tresnet_m.miil_in1k", "main", "config.json"), None);
/// ```
pub fn cached(cfg: &HubConfig, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
    let revision = if revision.is_empty() {
        DEFAULT_REVISION
    } else {
        revision
    };
    if validate_repo(repo).is_err() || validate_revision(revision).is_err() {
        return None;
    }
    validate_file(file).ok()?;
    let repo_dir = cfg.cache_dir.join(repo_folder(repo));
    let commit = if is_commit_hash(revision) {
        revision.to_string()
    } else {
        let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
        let commit = commit.trim().to_string();
        is_safe_token(&commit).then_some(commit)?
    };
    let path = repo_dir.join("snapshots").join(commit).join(file);
    // `is_file` follows the symlink: a link to a removed blob is not a hit.
    path.is_file().then_some(path)
}

fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40
        && revision
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A single path component made of letters, digits, `-` and `_` (commit hashes, ETags).
fn is_safe_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The hub's rule (`huggingface_hub.utils.validate_repo_id`): `name` or `namespace/name`, of
/// letters, digits, `-`, `_` and `.`, without `--` or `..`, at most 96 characters.
fn validate_repo(repo: &str) -> Result<(), HubError> {
    let invalid = |reason| HubError::InvalidName {
        what: "repository",
        name: repo.to_string(),
        reason,
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if repo.is_empty() || repo.len() > 96 || parts.len() > 2 {
        return Err(invalid(
            "expected `name` or `namespace/name`, at most 96 characters",
        ));
    }
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
    };
    if !parts.iter().all(|p| valid_part(p)) || repo.contains("--") || repo.contains("..") {
        return Err(invalid(
            "use letters, digits, `-`, `_` and `.` (not at the ends, no `--` or `..`)",
        ));
    }
    Ok(())
}

fn validate_revision(revision: &str) -> Result<(), HubError> {
    if !is_relative_hub_path(revision) {
        return Err(HubError::InvalidName {
            what: "revision",
            name: revision.to_string(),
            reason: "expected a branch, tag or commit hash (a relative name without `..`)",
        });
    }
    Ok(())
}

fn validate_file(file: &str) -> Result<(), HubError> {
    if !is_relative_hub_path(file) {
        return Err(HubError::InvalidName {
            what: "file name",
            name: file.to_string(),
            reason: "expected a path inside the repository, like `model.safetensors` or \
                     `onnx/model.onnx` (relative, `/`-separated, without `.` or `..`)",
        });
    }
    Ok(())
}

/// A `/`-separated relative path whose every component is a plain name: joined to a cache
/// directory it stays inside it.
fn is_relative_hub_path(s: &str) -> bool {
    !s.is_empty()
        && !s.contains(['\\', '\0'])
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && Path::new(s)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}
