//! A tiny Hugging Face hub for tests: one repo on 127.0.0.1:0 answering ranged
//! `GET /<repo>/resolve/<rev>/<file>` with `Content-Range`, `ETag` and `X-Repo-Commit` as the hub
//! does, with switchable misbehaviour (error statuses, cut connections, missing headers).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The commit every answer names.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Clone)]
pub struct ServedFile {
    pub content: Vec<u8>,
    pub etag: String,
    /// The total size put in `Content-Range` (the true length when `None`).
    pub announced_size: Option<usize>,
}

impl ServedFile {
    /// An LFS file: its ETag is the sha256 of its content.
    pub fn lfs(content: Vec<u8>) -> Self {
        let etag = sha256_hex(&content);
        ServedFile {
            content,
            etag,
            announced_size: None,
        }
    }

    /// A regular git file: its ETag is a git blob id (not checked by the client).
    pub fn git(content: &[u8], blob_id: &str) -> Self {
        ServedFile {
            content: content.to_vec(),
            etag: blob_id.to_string(),
            announced_size: None,
        }
    }
}

#[derive(Clone, Copy)]
pub enum Behaviour {
    /// Serve files, honouring `Range`.
    Normal,
    /// Answer every request with this status.
    Status(u16),
    /// Answer the metadata request (`Range: bytes=0-0`) normally; for the content, send headers
    /// with the full `Content-Length`, then half the bytes, then close the connection.
    CutContent,
    /// Answer the metadata request without `X-Repo-Commit`.
    NoCommitHeader,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HashMap<String, String>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

pub struct TestHub {
    pub endpoint: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestHub {
    /// Serves `files` of `repo`.
    pub fn start(repo: &str, files: &[(&str, ServedFile)], behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let addr = listener.local_addr().expect("local address");
        let files: HashMap<String, ServedFile> = files
            .iter()
            .map(|(name, f)| (name.to_string(), f.clone()))
            .collect();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            let repo = repo.to_string();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        // One connection at a time is enough: the client is sequential.
                        let _ = serve(stream, &repo, &files, behaviour, &requests);
                    }
                }
            })
        };
        TestHub {
            endpoint: format!("http://{addr}"),
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("request log").clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().expect("request log").len()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking `accept` so the thread sees the flag.
        if let Some(addr) = self.endpoint.strip_prefix("http://") {
            let _ = TcpStream::connect(addr);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    mut stream: TcpStream,
    repo: &str,
    files: &HashMap<String, ServedFile>,
    behaviour: Behaviour,
    requests: &Mutex<Vec<Recorded>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let range = headers.get("range").cloned();
    requests.lock().expect("request log").push(Recorded {
        path: path.clone(),
        headers,
    });

    if let Behaviour::Status(status) = behaviour {
        return respond(&mut stream, status, &[], b"refused");
    }
    // /<org>/<name>/resolve/<revision>/<file>
    let file = path
        .strip_prefix(&format!("/{repo}/resolve/"))
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(_revision, file)| files.get(file));
    let Some(file) = file else {
        return respond(&mut stream, 404, &[], b"Entry not found");
    };
    let len = file.content.len();
    let total = file.announced_size.unwrap_or(len);
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
            let start: usize = a.parse().unwrap_or(0);
            let end: usize = b.parse().unwrap_or(usize::MAX).min(len.saturating_sub(1));
            (start, end)
        }
        None => (0, len.saturating_sub(1)),
    };
    if start >= len {
        return respond(&mut stream, 416, &[], b"");
    }
    let body = &file.content[start..=end];
    let etag = format!("\"{}\"", file.etag);
    let content_range = format!("bytes {start}-{end}/{total}");
    let mut extra = vec![("ETag", etag.as_str()), ("Content-Range", &content_range)];
    if !matches!(behaviour, Behaviour::NoCommitHeader) {
        extra.push(("X-Repo-Commit", COMMIT));
    }
    let is_metadata = range.as_deref() == Some("bytes=0-0");
    if matches!(behaviour, Behaviour::CutContent) && !is_metadata {
        write_head(&mut stream, 206, &extra, body.len())?;
        stream.write_all(&body[..body.len() / 2])?;
        stream.flush()?;
        return stream.shutdown(Shutdown::Both);
    }
    respond(&mut stream, 206, &extra, body)
}

fn write_head(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    content_length: usize,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} Test\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    ));
    stream.write_all(head.as_bytes())
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    write_head(stream, status, headers, body.len())?;
    stream.write_all(body)?;
    stream.flush()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
