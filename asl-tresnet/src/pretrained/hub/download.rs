//! The download itself: `hf-hub`'s blocking client, with the size and sha256 checks and the
//! errors of [`HubError`].

use std::io::{IsTerminal, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, Metadata};
use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest, Sha256};

use super::{is_safe_token, HubConfig, HubError};

/// Names used in error messages and recovery for one fetch.
struct Target<'a> {
    repo: &'a str,
    revision: &'a str,
    file: &'a str,
    url: String,
}

pub(super) fn download(
    cfg: &HubConfig,
    repo: &str,
    revision: &str,
    file: &str,
) -> Result<PathBuf, HubError> {
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
