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

use std::io::{IsTerminal, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Component, Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, Metadata};
use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest, Sha256};

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
    /// let cfg = asl_tresnet::hub::HubConfig::from_env();
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
/// use asl_tresnet::hub::{fetch, HubConfig};
/// let cfg = HubConfig::from_env();
/// let weights = fetch(&cfg, "timm/tresnet_m.miil_in21k", "main", "model.safetensors")?;
/// println!("{}", weights.display());
/// # Ok::<(), asl_tresnet::hub::HubError>(())
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

/// The cached path of `file` in `repo` at `revision`, if it is in the cache (never touches the
/// network). A commit-hash revision is looked up directly in `snapshots/`, a branch or tag
/// through `refs/<revision>`; a snapshot link whose blob is gone counts as absent.
///
/// ```
/// use asl_tresnet::hub::{cached, HubConfig};
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
    let repo_dir = cfg.cache_dir.join(model_repo(repo, revision).folder_name());
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

/// Names used in error messages and recovery for one fetch.
struct Target<'a> {
    repo: &'a str,
    revision: &'a str,
    file: &'a str,
    url: String,
}

fn download(cfg: &HubConfig, repo: &str, revision: &str, file: &str) -> Result<PathBuf, HubError> {
    let cache = Cache::new(cfg.cache_dir.clone());
    let hub_repo = model_repo(repo, revision);
    let api = ApiBuilder::from_cache(cache.clone())
        .with_endpoint(cfg.endpoint.trim_end_matches('/').to_string())
        // `from_cache` read the token file next to the cache; the configuration decides.
        .with_token(cfg.token.clone())
        .with_progress(cfg.progress && std::io::stderr().is_terminal())
        .with_user_agent("asl-tresnet", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| HubError::Network(format!("could not set up the HTTP client: {e}")))?;
    let api_repo = api.repo(hub_repo.clone());
    let target = Target {
        repo,
        revision,
        file,
        url: api_repo.url(file),
    };

    // hf-hub repeats this request inside `download`, but does not return what it learned: the
    // announced size and ETag are needed to verify the result.
    let meta = guarded(&target, || api.metadata(&target.url))?
        .map_err(|e| map_api_error(e, cfg, &target, None))?;
    check_metadata(&meta, &target)?;
    // Where hf-hub keeps an unfinished download, for the resume and the messages.
    let mut part = cache.repo(hub_repo).blob_path(meta.etag());
    part.set_extension("part");

    let mut result = guarded(&target, || api_repo.download(file))?;
    if matches!(result, Err(ApiError::InvalidResume)) {
        // The `.part` file is longer than the whole file: it belongs to something else.
        // Drop it and start over once.
        remove_if_present(&part).map_err(|e| io_error(&part, e))?;
        result = guarded(&target, || api_repo.download(file))?;
    }
    let path = result.map_err(|e| map_api_error(e, cfg, &target, Some(&part)))?;
    verify_download(&path, &meta, &target)?;
    Ok(path)
}

/// Runs an hf-hub call, turning a panic inside it (it has `expect`s on server answers, e.g. a
/// redirect without `Location`) into an error.
fn guarded<T>(target: &Target<'_>, call: impl FnOnce() -> T) -> Result<T, HubError> {
    catch_unwind(AssertUnwindSafe(call)).map_err(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the hub client failed on it".to_string());
        HubError::BadResponse {
            url: target.url.clone(),
            reason,
        }
    })
}

/// hf-hub uses the commit hash and the ETag as path components: refuse anything that could
/// leave the cache directory.
fn check_metadata(meta: &Metadata, target: &Target<'_>) -> Result<(), HubError> {
    let bad = |reason: String| HubError::BadResponse {
        url: target.url.clone(),
        reason,
    };
    if !is_safe_token(meta.commit_hash()) {
        return Err(bad(format!(
            "the X-Repo-Commit header `{}` is not a commit hash",
            meta.commit_hash()
        )));
    }
    if !is_safe_token(meta.etag()) {
        return Err(bad(format!(
            "the ETag `{}` cannot name a cache file",
            meta.etag()
        )));
    }
    Ok(())
}

/// Checks a fresh download against the metadata; on a mismatch removes the snapshot link and
/// the blob it points to, and returns [`HubError::Corrupt`].
fn verify_download(pointer: &Path, meta: &Metadata, target: &Target<'_>) -> Result<(), HubError> {
    // The blob behind the snapshot link (the link itself where hf-hub had to copy instead).
    let content = std::fs::canonicalize(pointer).map_err(|e| io_error(pointer, e))?;
    let problem = match content_problem(&content, meta) {
        Ok(None) => return Ok(()),
        Ok(Some(problem)) => problem,
        Err(e) => return Err(io_error(&content, e)),
    };
    let mut reason = problem;
    for path in [pointer, content.as_path()] {
        if let Err(e) = remove_if_present(path) {
            reason.push_str(&format!("; could not remove {}: {e}", path.display()));
        }
    }
    Err(HubError::Corrupt {
        repo: target.repo.to_string(),
        file: target.file.to_string(),
        reason,
    })
}

/// `Ok(None)` when the content matches the announced size (and sha256, for an LFS ETag).
fn content_problem(content: &Path, meta: &Metadata) -> std::io::Result<Option<String>> {
    let size = std::fs::metadata(content)?.len();
    if size != meta.size() as u64 {
        return Ok(Some(format!(
            "{size} bytes received, the hub announced {}",
            meta.size()
        )));
    }
    // LFS files carry the sha256 of their content as ETag; regular git files a git blob id,
    // which only the size check covers.
    let etag = meta.etag().to_ascii_lowercase();
    if etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        let actual = sha256_hex(content)?;
        if actual != etag {
            return Ok(Some(format!("sha256 {actual}, the hub announced {etag}")));
        }
    }
    Ok(None)
}

fn sha256_hex(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn map_api_error(
    err: ApiError,
    cfg: &HubConfig,
    target: &Target<'_>,
    part: Option<&Path>,
) -> HubError {
    let bad = |reason: String| HubError::BadResponse {
        url: target.url.clone(),
        reason,
    };
    match err {
        ApiError::RequestError(e) => match *e {
            ureq::Error::StatusCode(404) => HubError::NotFound {
                repo: target.repo.to_string(),
                revision: target.revision.to_string(),
                file: target.file.to_string(),
            },
            ureq::Error::StatusCode(status @ (401 | 403)) => HubError::Unauthorized {
                repo: target.repo.to_string(),
                file: target.file.to_string(),
                status,
            },
            ureq::Error::StatusCode(status) if status >= 500 => {
                network_error(format!("the hub answered HTTP {status}"), cfg, target, part)
            }
            ureq::Error::StatusCode(status) => bad(format!("HTTP status {status}")),
            ureq::Error::BadUri(uri) => bad(format!("invalid URL `{uri}` (check HF_ENDPOINT)")),
            other => network_error(other.to_string(), cfg, target, part),
        },
        ApiError::IoError(e) if is_network_io(&e) => {
            network_error(e.to_string(), cfg, target, part)
        }
        ApiError::IoError(e) => io_error(&cfg.cache_dir, e),
        ApiError::MissingHeader(header) => bad(format!("the answer has no {header} header")),
        ApiError::InvalidHeader(header) => bad(format!("the {header} header is malformed")),
        ApiError::ParseIntError(_) => bad("the Content-Range header has no file size".into()),
        ApiError::TooManyRetries(inner) => map_api_error(*inner, cfg, target, part),
        ApiError::InvalidResume => bad("the partial download is longer than the file".into()),
        ApiError::LockAcquisition(path) => HubError::Locked { path },
        // Variants behind hf-hub features this crate does not enable (native-tls).
        #[allow(unreachable_patterns)]
        other => network_error(other.to_string(), cfg, target, part),
    }
}

fn network_error(
    cause: String,
    cfg: &HubConfig,
    target: &Target<'_>,
    part: Option<&Path>,
) -> HubError {
    let Target { repo, file, .. } = target;
    match part.filter(|p| p.exists()) {
        Some(part) => HubError::Network(format!(
            "the download of `{file}` from `{repo}` was interrupted ({cause}). Nothing \
             incomplete was added to the cache: the partial data waits in {} and running the \
             same command again resumes the download",
            part.display()
        )),
        None => HubError::Network(format!(
            "could not get `{file}` from `{repo}` at {} ({cause}); nothing was written to the \
             cache. Check the network connection and HF_ENDPOINT and try again, or set \
             HF_HUB_OFFLINE=1 to use only the local cache",
            cfg.endpoint
        )),
    }
}

/// Read errors from the connection reach us as `io::Error`s from `std::io::copy`, next to the
/// file system's own: tell them apart by kind, or by the `ureq::Error` they wrap.
fn is_network_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof
            | ConnectionReset
            | ConnectionAborted
            | ConnectionRefused
            | NotConnected
            | BrokenPipe
            | TimedOut
    ) || e.get_ref().is_some_and(|inner| inner.is::<ureq::Error>())
}

fn io_error(path: &Path, e: std::io::Error) -> HubError {
    HubError::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn model_repo(repo: &str, revision: &str) -> Repo {
    Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string())
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
