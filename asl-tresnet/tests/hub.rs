//! The hub client against a local HTTP server that answers like the Hugging Face hub (ranged
//! `GET .../resolve/<rev>/<file>` with `Content-Range`, `ETag` and `X-Repo-Commit`): the cache
//! layout Python shares, cache hits without requests, offline mode, HTTP errors, cut
//! connections and content that does not match what the server announced.
//!
//! Each test has its own server on 127.0.0.1:0 and its own cache directory, and builds its
//! `HubConfig` directly, so the tests run in parallel; `from_env` is tested in child processes.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use asl_tresnet::pretrained::hub::{cached, fetch, HubConfig, HubError};

use asl_test_support::hub::{Behaviour, ServedFile, TestHub, COMMIT};

const REPO: &str = "asl-test/tresnet_m-coco";
const REPO_DIR: &str = "models--asl-test--tresnet_m-coco";

// ------------------------------------------------------------------------------------------
// Helpers.

/// Deterministic, not repetitive, so that a misplaced range shows as a content mismatch.
fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn config(hub: &TestHub, cache: &Path) -> HubConfig {
    HubConfig {
        endpoint: hub.endpoint.clone(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
        progress: false,
    }
}

fn cache_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("asl-hub-test-")
        .tempdir()
        .expect("temporary cache directory")
}

/// Every file (not directory) under `dir`, relative to it, sorted; symlinks are listed, not
/// followed.
fn cache_entries(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                walk(root, &path, out);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The cache holds no blob and no snapshot entry for `etag` / `file` (lock and `.part` files
/// are allowed: they are not content).
fn assert_nothing_cached(cache: &Path, etag: &str, file: &str) {
    let repo_dir = cache.join(REPO_DIR);
    assert!(
        !repo_dir.join("blobs").join(etag).exists(),
        "blob left in cache: {:?}",
        cache_entries(cache)
    );
    let snapshot = repo_dir.join("snapshots").join(COMMIT).join(file);
    assert!(
        snapshot.symlink_metadata().is_err(),
        "snapshot entry left in cache: {:?}",
        cache_entries(cache)
    );
    for entry in cache_entries(cache) {
        assert!(
            entry.ends_with(".lock")
                || entry.ends_with(".part")
                || entry.starts_with(&format!("{REPO_DIR}/refs/")),
            "unexpected cache entry {entry}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Tests.

#[test]
fn download_writes_the_python_cache_layout() {
    let weights = ServedFile::lfs(payload(10_000));
    let config_json = ServedFile::git(
        br#"{"architecture": "tresnet_m"}"#,
        "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
    );
    let nested = ServedFile::lfs(payload(333));
    let hub = TestHub::start(
        REPO,
        &[
            ("model.safetensors", weights.clone()),
            ("config.json", config_json.clone()),
            ("onnx/model.onnx", nested.clone()),
        ],
        Behaviour::Normal,
    );
    let cache = cache_dir();
    let cfg = config(&hub, cache.path());
    let repo_dir = cache.path().join(REPO_DIR);

    for (file, served, link) in [
        ("model.safetensors", &weights, "../../blobs"),
        ("config.json", &config_json, "../../blobs"),
        ("onnx/model.onnx", &nested, "../../../blobs"),
    ] {
        let path = fetch(&cfg, REPO, "main", file).expect("download");
        let snapshot = repo_dir.join("snapshots").join(COMMIT).join(file);
        assert_eq!(path, snapshot);
        assert_eq!(std::fs::read(&path).expect("read snapshot"), served.content);
        // snapshots/<commit>/<file> -> ../../blobs/<etag>, relative as Python writes it.
        let target = std::fs::read_link(&snapshot).expect("snapshot entry is a symlink");
        assert_eq!(target, Path::new(link).join(&served.etag));
        let blob = repo_dir.join("blobs").join(&served.etag);
        assert!(blob.symlink_metadata().expect("blob").file_type().is_file());
        assert_eq!(std::fs::read(&blob).expect("read blob"), served.content);
    }
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs").join("main")).expect("refs/main"),
        COMMIT
    );
    assert!(
        !cache_entries(cache.path())
            .iter()
            .any(|e| e.ends_with(".part")),
        "{:?}",
        cache_entries(cache.path())
    );
    // hf-hub's protocol: a one-byte metadata request, then the content.
    let requests = hub.requests();
    assert_eq!(
        requests[0].path,
        format!("/{REPO}/resolve/main/model.safetensors")
    );
    assert_eq!(requests[0].header("range"), Some("bytes=0-0"));
    assert!(requests[1..]
        .iter()
        .any(|r| r.header("range") == Some("bytes=0-")));
    // No token configured: no Authorization header (not even from a token file).
    assert!(requests.iter().all(|r| r.header("authorization").is_none()));
}

#[test]
fn cache_hit_makes_no_request() {
    let served = ServedFile::lfs(payload(4_096));
    let hub = TestHub::start(
        REPO,
        &[("model.safetensors", served.clone())],
        Behaviour::Normal,
    );
    let cache = cache_dir();
    let cfg = config(&hub, cache.path());

    let first = fetch(&cfg, REPO, "main", "model.safetensors").expect("download");
    let after_download = hub.request_count();
    assert!(after_download >= 2);
    let second = fetch(&cfg, REPO, "main", "model.safetensors").expect("cache hit");
    assert_eq!(second, first);
    assert_eq!(
        hub.request_count(),
        after_download,
        "a cache hit went to the network"
    );
    assert_eq!(
        cached(&cfg, REPO, "main", "model.safetensors"),
        Some(first.clone())
    );
    assert_eq!(
        cached(&cfg, REPO, "", "model.safetensors"),
        Some(first.clone())
    );

    // With the server gone, the branch (through refs/main) and the commit hash still resolve.
    drop(hub);
    assert_eq!(
        fetch(&cfg, REPO, "main", "model.safetensors").expect("hit"),
        first
    );
    assert_eq!(
        fetch(&cfg, REPO, COMMIT, "model.safetensors").expect("hit"),
        first
    );
    assert_eq!(std::fs::read(&first).expect("read"), served.content);
}

#[test]
fn offline_hit_uses_the_cache_only() {
    let served = ServedFile::lfs(payload(2_000));
    let hub = TestHub::start(
        REPO,
        &[("model.safetensors", served.clone())],
        Behaviour::Normal,
    );
    let cache = cache_dir();
    let downloaded = fetch(
        &config(&hub, cache.path()),
        REPO,
        "main",
        "model.safetensors",
    )
    .expect("download");
    let before = hub.request_count();

    let offline = HubConfig {
        offline: true,
        ..config(&hub, cache.path())
    };
    let by_branch = fetch(&offline, REPO, "main", "model.safetensors").expect("offline hit");
    let by_commit = fetch(&offline, REPO, COMMIT, "model.safetensors").expect("offline hit");
    assert_eq!(by_branch, downloaded);
    assert_eq!(by_commit, downloaded);
    assert_eq!(std::fs::read(&by_branch).expect("read"), served.content);
    assert_eq!(
        hub.request_count(),
        before,
        "offline mode touched the network"
    );
}

#[test]
fn offline_miss_names_repo_file_and_cache() {
    let hub = TestHub::start(
        REPO,
        &[("model.safetensors", ServedFile::lfs(payload(100)))],
        Behaviour::Normal,
    );
    let cache = cache_dir();
    let cfg = HubConfig {
        offline: true,
        ..config(&hub, cache.path())
    };
    let err = fetch(&cfg, REPO, "main", "model.safetensors").expect_err("offline miss");
    let message = err.to_string();
    match err {
        HubError::OfflineMiss {
            repo,
            revision,
            file,
            cache_dir,
        } => {
            assert_eq!(repo, REPO);
            assert_eq!(revision, "main");
            assert_eq!(file, "model.safetensors");
            assert_eq!(cache_dir, cache.path());
        }
        other => panic!("expected OfflineMiss, got {other:?}"),
    }
    assert!(
        message.contains(REPO) && message.contains("model.safetensors"),
        "{message}"
    );
    assert!(
        message.contains(&cache.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("HF_HUB_OFFLINE"), "{message}");
    assert_eq!(hub.request_count(), 0, "offline mode touched the network");
    assert!(cache_entries(cache.path()).is_empty());
}

#[test]
fn missing_file_is_not_found() {
    let hub = TestHub::start(
        REPO,
        &[("model.safetensors", ServedFile::lfs(payload(100)))],
        Behaviour::Normal,
    );
    let cache = cache_dir();
    let err = fetch(
        &config(&hub, cache.path()),
        REPO,
        "main",
        "pytorch_model.bin",
    )
    .expect_err("404");
    let message = err.to_string();
    match err {
        HubError::NotFound {
            repo,
            revision,
            file,
        } => {
            assert_eq!((repo.as_str(), revision.as_str()), (REPO, "main"));
            assert_eq!(file, "pytorch_model.bin");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(
        message.contains(REPO) && message.contains("pytorch_model.bin"),
        "{message}"
    );
    assert!(!cache_entries(cache.path())
        .iter()
        .any(|e| e.contains("/blobs/") || e.contains("/snapshots/")));
}

#[test]
fn refused_access_is_unauthorized() {
    for status in [401u16, 403] {
        let hub = TestHub::start(REPO, &[], Behaviour::Status(status));
        let cache = cache_dir();
        let err = fetch(
            &config(&hub, cache.path()),
            REPO,
            "main",
            "model.safetensors",
        )
        .expect_err("refused");
        let message = err.to_string();
        match err {
            HubError::Unauthorized {
                repo,
                file,
                status: got,
            } => {
                assert_eq!(repo, REPO);
                assert_eq!(file, "model.safetensors");
                assert_eq!(got, status);
            }
            other => panic!("expected Unauthorized for {status}, got {other:?}"),
        }
        assert!(message.contains("HF_TOKEN"), "{message}");
        assert!(message.contains(REPO), "{message}");
    }
}

#[test]
fn token_is_sent_as_bearer() {
    let hub = TestHub::start(
        REPO,
        &[("model.safetensors", ServedFile::lfs(payload(1_000)))],
        Behaviour::Normal,
    );
    let cache = cache_dir();
    let cfg = HubConfig {
        token: Some("hf_test_secret".to_string()),
        ..config(&hub, cache.path())
    };
    fetch(&cfg, REPO, "main", "model.safetensors").expect("download");
    let requests = hub.requests();
    assert!(requests.len() >= 2);
    for r in &requests {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer hf_test_secret"),
            "{}",
            r.path
        );
    }
    // The token never shows in a logged configuration.
    let debug = format!("{cfg:?}");
    assert!(!debug.contains("hf_test_secret"), "{debug}");
}

#[test]
fn cut_connection_leaves_no_corrupt_file_and_the_next_run_resumes() {
    let served = ServedFile::lfs(payload(200_000));
    let cache = cache_dir();
    let file = "model.safetensors";

    let cutting = TestHub::start(REPO, &[(file, served.clone())], Behaviour::CutContent);
    let err = fetch(&config(&cutting, cache.path()), REPO, "main", file).expect_err("cut");
    let message = err.to_string();
    assert!(
        matches!(err, HubError::Network(_)),
        "expected Network, got {err:?}"
    );
    assert!(
        message.contains(file) && message.contains(REPO),
        "{message}"
    );
    assert!(message.contains("again"), "{message}");
    assert_nothing_cached(cache.path(), &served.etag, file);
    assert_eq!(
        cached(&config(&cutting, cache.path()), REPO, "main", file),
        None
    );
    let part = cache
        .path()
        .join(REPO_DIR)
        .join("blobs")
        .join(format!("{}.part", served.etag));
    let kept = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(kept < served.content.len() as u64);
    drop(cutting);

    let good = TestHub::start(REPO, &[(file, served.clone())], Behaviour::Normal);
    let path = fetch(&config(&good, cache.path()), REPO, "main", file).expect("recovery");
    assert_eq!(std::fs::read(&path).expect("read"), served.content);
    // The second run continued where the first stopped.
    let resumed_from = format!("bytes={kept}-");
    assert!(
        good.requests()
            .iter()
            .any(|r| r.header("range") == Some(resumed_from.as_str())),
        "no request for {resumed_from}: {:?}",
        good.requests()
    );
    assert!(!part.exists());
}

#[test]
fn size_mismatch_is_corrupt_and_removed() {
    let file = "config.json";
    let mut served = ServedFile::git(
        br#"{"num_classes": 80}"#,
        "0f0e0d0c0b0a09080706050403020100f0e0d0c0",
    );
    served.announced_size = Some(served.content.len() + 10);
    let hub = TestHub::start(REPO, &[(file, served.clone())], Behaviour::Normal);
    let cache = cache_dir();
    let cfg = config(&hub, cache.path());
    let err = fetch(&cfg, REPO, "main", file).expect_err("size mismatch");
    let message = err.to_string();
    match err {
        HubError::Corrupt {
            repo,
            file: got,
            reason,
        } => {
            assert_eq!((repo.as_str(), got.as_str()), (REPO, file));
            assert!(reason.contains("bytes"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(message.contains("removed"), "{message}");
    assert_nothing_cached(cache.path(), &served.etag, file);
    assert_eq!(cached(&cfg, REPO, "main", file), None);
    assert!(!cache_entries(cache.path())
        .iter()
        .any(|e| e.ends_with(".part")));

    // A correct server afterwards: a clean download.
    served.announced_size = None;
    let good = TestHub::start(REPO, &[(file, served.clone())], Behaviour::Normal);
    let path = fetch(&config(&good, cache.path()), REPO, "main", file).expect("recovery");
    assert_eq!(std::fs::read(path).expect("read"), served.content);
}

#[test]
fn sha256_mismatch_is_corrupt_and_removed() {
    let file = "model.safetensors";
    let mut served = ServedFile::lfs(payload(5_000));
    // Same size, different bytes: only the hash can tell.
    served.content[2_500] ^= 0xff;
    let hub = TestHub::start(REPO, &[(file, served.clone())], Behaviour::Normal);
    let cache = cache_dir();
    let cfg = config(&hub, cache.path());
    let err = fetch(&cfg, REPO, "main", file).expect_err("hash mismatch");
    match &err {
        HubError::Corrupt { reason, .. } => {
            assert!(
                reason.contains("sha256") && reason.contains(&served.etag),
                "{reason}"
            )
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_nothing_cached(cache.path(), &served.etag, file);
    assert_eq!(cached(&cfg, REPO, "main", file), None);
}

#[test]
fn blob_deleted_by_hand_is_downloaded_again() {
    let file = "model.safetensors";
    let served = ServedFile::lfs(payload(3_000));
    let hub = TestHub::start(REPO, &[(file, served.clone())], Behaviour::Normal);
    let cache = cache_dir();
    let cfg = config(&hub, cache.path());
    let path = fetch(&cfg, REPO, "main", file).expect("download");
    std::fs::remove_file(cache.path().join(REPO_DIR).join("blobs").join(&served.etag))
        .expect("remove blob");
    // The snapshot link now dangles: not a hit, and not an obstacle to the new download.
    assert_eq!(cached(&cfg, REPO, "main", file), None);
    let again = fetch(&cfg, REPO, "main", file).expect("download again");
    assert_eq!(again, path);
    assert_eq!(std::fs::read(again).expect("read"), served.content);
}

#[test]
fn unreachable_hub_and_bad_answers_are_clear_errors() {
    let cache = cache_dir();
    // A port that was just free: connection refused.
    let endpoint = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let cfg = HubConfig {
        endpoint,
        cache_dir: cache.path().to_path_buf(),
        token: None,
        offline: false,
        progress: false,
    };
    let err = fetch(&cfg, REPO, "main", "model.safetensors").expect_err("refused");
    assert!(matches!(err, HubError::Network(_)), "{err:?}");
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");

    // A server that is not a hub (no X-Repo-Commit).
    let hub = TestHub::start(
        REPO,
        &[("model.safetensors", ServedFile::lfs(payload(10)))],
        Behaviour::NoCommitHeader,
    );
    let err = fetch(
        &config(&hub, cache.path()),
        REPO,
        "main",
        "model.safetensors",
    )
    .expect_err("not a hub");
    assert!(matches!(err, HubError::BadResponse { .. }), "{err:?}");
    assert!(
        err.to_string()
            .to_ascii_lowercase()
            .contains("x-repo-commit"),
        "{err}"
    );

    // A server error.
    let hub = TestHub::start(REPO, &[], Behaviour::Status(503));
    let err = fetch(
        &config(&hub, cache.path()),
        REPO,
        "main",
        "model.safetensors",
    )
    .expect_err("503");
    assert!(matches!(err, HubError::Network(_)), "{err:?}");
    assert!(err.to_string().contains("503"), "{err}");
    assert!(!cache_entries(cache.path())
        .iter()
        .any(|e| e.contains("/blobs/") || e.contains("/snapshots/")));
}

#[test]
fn names_that_could_escape_the_cache_are_refused_without_network() {
    let hub = TestHub::start(REPO, &[], Behaviour::Normal);
    let cache = cache_dir();
    let cfg = config(&hub, cache.path());
    for (repo, revision, file) in [
        (REPO, "main", "../../../etc/passwd"),
        (REPO, "main", "/etc/passwd"),
        (REPO, "main", "a//b"),
        (REPO, "../main", "config.json"),
        ("a/b/c", "main", "config.json"),
        ("../x", "main", "config.json"),
        ("org--x/name", "main", "config.json"),
        ("", "main", "config.json"),
    ] {
        let err = fetch(&cfg, repo, revision, file).expect_err("invalid name");
        assert!(
            matches!(err, HubError::InvalidName { .. }),
            "{repo} {revision} {file}: {err:?}"
        );
    }
    assert_eq!(hub.request_count(), 0);
    assert!(cache_entries(cache.path()).is_empty());
}

// ------------------------------------------------------------------------------------------
// `HubConfig::from_env`, in child processes: setting variables in this multi-threaded process
// would race with the other tests.

const CHILD_MARKER: &str = "ASL_HUB_FROM_ENV_CHILD";
const HUB_VARS: &[&str] = &[
    "HF_ENDPOINT",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
    "XDG_CACHE_HOME",
];

/// Not a test on its own: prints `from_env()` when run as a child of the test below.
#[test]
fn from_env_child() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    let cfg = HubConfig::from_env();
    println!("@@endpoint={}", cfg.endpoint);
    println!("@@cache_dir={}", cfg.cache_dir.display());
    println!("@@token={}", cfg.token.as_deref().unwrap_or("<none>"));
    println!("@@offline={}", cfg.offline);
    println!("@@progress={}", cfg.progress);
}

fn from_env_in_child(vars: &[(&str, &str)]) -> HashMap<String, String> {
    let exe = std::env::current_exe().expect("test binary");
    let mut command = std::process::Command::new(exe);
    command.args([
        "from_env_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ]);
    for var in HUB_VARS {
        command.env_remove(var);
    }
    command.env(CHILD_MARKER, "1");
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = command.output().expect("run the child test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    stdout
        .lines()
        // libtest may print its own text before ours on the same line.
        .filter_map(|line| line.split_once("@@").and_then(|(_, kv)| kv.split_once('=')))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn from_env_reads_the_huggingface_variables() {
    let dir = cache_dir();
    let home = dir.path().join("home");
    let hf_home = dir.path().join("hf_home");
    std::fs::create_dir_all(&hf_home).expect("mkdir");
    std::fs::write(hf_home.join("token"), "hf_from_file\n").expect("token file");
    let path = |p: PathBuf| p.display().to_string();

    // Nothing set: ~/.cache/huggingface/hub, the public hub, no token, online.
    let got = from_env_in_child(&[("HOME", &path(home.clone()))]);
    assert_eq!(got["cache_dir"], path(home.join(".cache/huggingface/hub")));
    assert_eq!(got["endpoint"], "https://huggingface.co");
    assert_eq!(got["token"], "<none>");
    assert_eq!(got["offline"], "false");
    assert_eq!(got["progress"], "true");

    // XDG_CACHE_HOME moves the default HF_HOME.
    let xdg = dir.path().join("xdg");
    let got = from_env_in_child(&[
        ("HOME", &path(home.clone())),
        ("XDG_CACHE_HOME", &path(xdg.clone())),
    ]);
    assert_eq!(got["cache_dir"], path(xdg.join("huggingface/hub")));

    // HF_HOME: cache and token file under it; offline spelled "yes"; endpoint without its slash.
    let got = from_env_in_child(&[
        ("HOME", &path(home.clone())),
        ("HF_HOME", &path(hf_home.clone())),
        ("HF_HUB_OFFLINE", "yes"),
        ("HF_ENDPOINT", "http://mirror.example:8080/"),
    ]);
    assert_eq!(got["cache_dir"], path(hf_home.join("hub")));
    assert_eq!(got["token"], "hf_from_file");
    assert_eq!(got["offline"], "true");
    assert_eq!(got["endpoint"], "http://mirror.example:8080");

    // HF_HUB_CACHE and HF_TOKEN win over HF_HOME; "0" is not offline.
    let hub_cache = dir.path().join("hub_cache");
    let got = from_env_in_child(&[
        ("HOME", &path(home.clone())),
        ("HF_HOME", &path(hf_home.clone())),
        ("HF_HUB_CACHE", &path(hub_cache.clone())),
        ("HF_TOKEN", "hf_from_env"),
        ("HF_HUB_OFFLINE", "0"),
    ]);
    assert_eq!(got["cache_dir"], path(hub_cache));
    assert_eq!(got["token"], "hf_from_env");
    assert_eq!(got["offline"], "false");
    for value in ["1", "TRUE", "on"] {
        let got = from_env_in_child(&[("HOME", &path(home.clone())), ("HF_HUB_OFFLINE", value)]);
        assert_eq!(got["offline"], "true", "HF_HUB_OFFLINE={value}");
    }
}
