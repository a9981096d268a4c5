//! A local stand-in for the Hugging Face Hub: the HTTP calls hf-hub and `huggingface_hub`
//! make to download (`HEAD`/`GET /{repo}/resolve/{rev}/{file}` with `ETag`,
//! `X-Repo-Commit`, `X-Linked-Etag`, `X-Linked-Size`), create a repository
//! (`POST /api/repos/create`) and commit (`POST /api/models/{repo}/preupload/{rev}`, then
//! `POST /api/models/{repo}/commit/{rev}` with NDJSON), on 127.0.0.1.
//!
//! Faults can be switched on to test the failure paths: a required token (401), a
//! truncated body, corrupted bytes.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// What the server does wrong, on purpose.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer 401 unless `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Declare the full length but send only half of the body of downloads.
    pub truncate: bool,
    /// Flip the bytes of downloads (length unchanged).
    pub corrupt: bool,
}

#[derive(Debug, Default)]
struct Repo {
    private: bool,
    /// (commit id, files) in commit order.
    commits: Vec<(String, BTreeMap<String, Vec<u8>>)>,
}

#[derive(Debug, Default)]
struct State {
    repos: HashMap<String, Repo>,
    faults: Faults,
    /// Request lines seen, for assertions ("HEAD /o/r/resolve/main/x").
    log: Vec<String>,
    /// Every header value seen, to check that no token leaks into anything but auth.
    authorizations: Vec<String>,
}

/// A running server; it stops when the test process ends.
#[derive(Clone)]
pub struct HubServer {
    state: Arc<Mutex<State>>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

impl HubServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        Self { state, endpoint }
    }

    /// Adds a repository with one commit holding `files`.
    pub fn add_repo(&self, repo: &str, files: &[(&str, &[u8])]) {
        let files: BTreeMap<String, Vec<u8>> = files
            .iter()
            .map(|(n, b)| (n.to_string(), b.to_vec()))
            .collect();
        let mut state = self.state.lock().unwrap();
        let id = commit_id(repo, 0, &files);
        state
            .repos
            .entry(repo.to_string())
            .or_default()
            .commits
            .push((id, files));
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().unwrap().faults = faults;
    }

    /// The files of `repo` at its last commit.
    pub fn files(&self, repo: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let state = self.state.lock().unwrap();
        state
            .repos
            .get(repo)
            .and_then(|r| r.commits.last().map(|c| c.1.clone()))
    }

    pub fn commits(&self, repo: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .repos
            .get(repo)
            .map_or(0, |r| r.commits.len())
    }

    pub fn is_private(&self, repo: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .repos
            .get(repo)
            .is_some_and(|r| r.private)
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

fn commit_id(repo: &str, n: usize, files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = Sha256::new();
    h.update(repo.as_bytes());
    h.update(n.to_le_bytes());
    for (name, bytes) in files {
        h.update(name.as_bytes());
        h.update(bytes);
    }
    hex(&h.finalize())[..40].to_string()
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if let Some(len) = headers
        .get("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Bytes of the body actually sent (a truncated download sends fewer than declared).
    send: Option<usize>,
}

fn json(status: u16, value: serde_json::Value) -> Response {
    Response {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: value.to_string().into_bytes(),
        send: None,
    }
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let mut r = json(status, serde_json::json!({ "error": message }));
    r.headers.push(("X-Error-Code".into(), code.into()));
    r.headers.push(("X-Error-Message".into(), message.into()));
    r
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    if let Some(request) = read_request(&mut reader)? {
        let head = request.method == "HEAD";
        let response = route(&request, state);
        let reason = match response.status {
            200 => "OK",
            401 => "Unauthorized",
            404 => "Not Found",
            409 => "Conflict",
            _ => "Error",
        };
        let mut out = format!("HTTP/1.1 {} {reason}\r\n", response.status);
        for (k, v) in &response.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            response.body.len()
        ));
        writer.write_all(out.as_bytes())?;
        if !head {
            let n = response.send.unwrap_or(response.body.len());
            writer.write_all(&response.body[..n])?;
        }
        writer.flush()?;
    }
    Ok(())
}

fn route(request: &Request, state: &Mutex<State>) -> Response {
    let mut state = state.lock().unwrap();
    state
        .log
        .push(format!("{} {}", request.method, request.path));
    let auth = request.headers.get("authorization").cloned();
    if let Some(a) = &auth {
        state.authorizations.push(a.clone());
    }
    let authorized = match &state.faults.token {
        None => true,
        Some(token) => auth.as_deref() == Some(&format!("Bearer {token}")),
    };
    let path = request
        .path
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if !authorized {
        return error(401, "", "Invalid credentials in Authorization header");
    }
    match (request.method.as_str(), segments.as_slice()) {
        ("HEAD" | "GET", [owner, name, "resolve", rev, file @ ..]) => {
            let repo_id = format!("{owner}/{name}");
            let file = file.join("/");
            let Some(repo) = state.repos.get(&repo_id) else {
                return error(404, "RepoNotFound", "Repository not found");
            };
            let commit = repo
                .commits
                .iter()
                .rev()
                .find(|(id, _)| rev == &"main" || id == rev);
            let Some((commit, files)) = commit else {
                return error(404, "RevisionNotFound", "Invalid rev id");
            };
            let Some(bytes) = files.get(&file) else {
                let mut r = error(404, "EntryNotFound", "Entry not found");
                r.headers.push(("X-Repo-Commit".into(), commit.clone()));
                return r;
            };
            let etag = sha256(bytes);
            let mut body = bytes.clone();
            if state.faults.corrupt {
                body.iter_mut().for_each(|b| *b ^= 0x5a);
            }
            let send = state.faults.truncate.then_some(body.len() / 2);
            Response {
                status: 200,
                headers: vec![
                    ("ETag".into(), format!("\"{etag}\"")),
                    ("X-Linked-Etag".into(), format!("\"{etag}\"")),
                    ("X-Linked-Size".into(), bytes.len().to_string()),
                    ("X-Repo-Commit".into(), commit.clone()),
                    ("Accept-Ranges".into(), "bytes".into()),
                    ("Content-Type".into(), "application/octet-stream".into()),
                ],
                body,
                send,
            }
        }
        ("POST", ["api", "repos", "create"]) => {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
            let name = body["name"].as_str().unwrap_or_default();
            let owner = body["organization"].as_str().unwrap_or("user");
            let repo_id = format!("{owner}/{name}");
            if state.repos.contains_key(&repo_id) {
                return error(409, "", "You already created this model repo");
            }
            let private = body["private"].as_bool().unwrap_or(false);
            let files = BTreeMap::new();
            let id = commit_id(&repo_id, 0, &files);
            state.repos.insert(
                repo_id.clone(),
                Repo {
                    private,
                    commits: vec![(id, files)],
                },
            );
            json(
                200,
                serde_json::json!({ "url": format!("http://hub/{repo_id}"), "name": repo_id }),
            )
        }
        ("POST", ["api", "models", owner, name, "preupload", _rev]) => {
            if !state.repos.contains_key(&format!("{owner}/{name}")) {
                return error(404, "RepoNotFound", "Repository not found");
            }
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
            let files: Vec<serde_json::Value> = body["files"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|f| serde_json::json!({ "path": f["path"], "uploadMode": "regular", "shouldIgnore": false }))
                .collect();
            json(200, serde_json::json!({ "files": files }))
        }
        ("POST", ["api", "models", owner, name, "commit", _rev]) => {
            let repo_id = format!("{owner}/{name}");
            let Some(repo) = state.repos.get_mut(&repo_id) else {
                return error(404, "RepoNotFound", "Repository not found");
            };
            let mut files = repo.commits.last().map(|c| c.1.clone()).unwrap_or_default();
            let mut summary = String::new();
            for line in request
                .body
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                let op: serde_json::Value = match serde_json::from_slice(line) {
                    Ok(v) => v,
                    Err(e) => return error(400, "", &format!("bad NDJSON line: {e}")),
                };
                let value = &op["value"];
                match op["key"].as_str() {
                    Some("header") => {
                        summary = value["summary"].as_str().unwrap_or_default().to_string()
                    }
                    Some("file") => {
                        use base64::Engine;
                        let content = base64::engine::general_purpose::STANDARD
                            .decode(value["content"].as_str().unwrap_or_default())
                            .unwrap_or_default();
                        files.insert(
                            value["path"].as_str().unwrap_or_default().to_string(),
                            content,
                        );
                    }
                    Some("deletedFile") => {
                        files.remove(value["path"].as_str().unwrap_or_default());
                    }
                    other => {
                        return error(400, "", &format!("unsupported commit operation {other:?}"))
                    }
                }
            }
            let id = commit_id(&repo_id, repo.commits.len(), &files);
            repo.commits.push((id.clone(), files));
            json(
                200,
                serde_json::json!({
                    "commitUrl": format!("http://hub/{repo_id}/commit/{id}"),
                    "commitOid": id,
                    "commitMessage": summary,
                }),
            )
        }
        _ => error(
            404,
            "",
            &format!("no route for {} {}", request.method, request.path),
        ),
    }
}
