//! A fault proxy of the tests' own, on 127.0.0.1, between the loader and the local S3 server: it forwards each
//! HTTP request on a connection of its own and can, for requests matching a rule, lose the answer (the request
//! reaches the server, the connection is closed before the answer), reset the connection, answer with a status
//! of its own, or refuse every connection for a while (an outage).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy does to a request a rule matches.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward the request, read the server's answer, then close the client's connection without it.
    LoseAnswer,
    /// Forward the request, then reset the client's connection (RST) without the answer.
    ResetAfter,
    /// Answer with this status and body instead of forwarding. `{token}` in the body is replaced by the
    /// request's `x-amz-security-token` header (a server that quotes the request back).
    Answer(u16, String),
    /// Forward the request, then refuse every connection for this long (each is reset at once).
    Outage(Duration),
}

/// A rule: requests whose method is `method` (or any, when empty) and whose path contains `path`, the next
/// `times` of them.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    pub path: String,
    pub times: usize,
    pub fault: Fault,
}

struct State {
    rules: Vec<Rule>,
    /// `METHOD path -> what was done` for every request seen.
    log: Vec<String>,
    outage_until: Option<Instant>,
}

pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl FaultProxy {
    /// A proxy to `upstream` (`http://127.0.0.1:PORT`), on a free port.
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            rules: Vec::new(),
            log: Vec::new(),
            outage_until: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, upstream) = (st.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &upstream, &st);
                });
            }
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            state,
            stop,
            port,
        }
    }

    pub fn add(&self, rule: Rule) {
        self.state.lock().unwrap().rules.push(rule);
    }

    /// Every request seen, as `METHOD path -> action`.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// How many requests a rule has yet to match (summed over the rules for `path`).
    pub fn left(&self, path: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.rules
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.times)
            .sum()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One request: its head (request line and headers) and body.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request as sent upstream: on a connection of its own (`Connection: close`), body as received.
    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path).into_bytes();
        for (k, v) in &self.headers {
            if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("transfer-encoding") {
                continue;
            }
            if k.eq_ignore_ascii_case("content-length") {
                continue;
            }
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut req = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            req.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = req.header("content-length").and_then(|v| v.parse().ok()) {
        let mut body = vec![0; n];
        r.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(Some(req))
}

/// Resets a connection: closes it with SO_LINGER 0, so the peer sees a reset rather than an orderly close.
fn reset(conn: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this function owns, with a correctly sized linger value.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(conn);
}

/// Sends `req` to the server and returns its whole answer, with `Connection: close` (one request a connection).
fn forward(req: &Request, upstream: &str) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(&req.bytes())?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(answer);
    };
    let head = String::from_utf8_lossy(&answer[..end]).to_string();
    let mut out = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&answer[end + 4..]);
    Ok(bytes)
}

fn serve(conn: TcpStream, upstream: &str, state: &Mutex<State>) -> std::io::Result<()> {
    {
        let mut s = state.lock().unwrap();
        if s.outage_until.is_some_and(|t| Instant::now() < t) {
            s.log.push("(outage)".into());
            drop(s);
            reset(conn);
            return Ok(());
        }
    }
    let mut reader = BufReader::new(conn.try_clone()?);
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    let fault = {
        let mut s = state.lock().unwrap();
        let found = s.rules.iter_mut().find(|r| {
            r.times > 0
                && (r.method.is_empty() || r.method == req.method)
                && req.path.contains(&r.path)
        });
        let fault = found.map(|r| {
            r.times -= 1;
            r.fault.clone()
        });
        let what = format!("{} {} -> {:?}", req.method, req.path, fault);
        s.log.push(what);
        fault
    };
    let mut conn = conn;
    match fault {
        None => {
            let answer = forward(&req, upstream)?;
            conn.write_all(&answer)?;
        }
        Some(Fault::LoseAnswer) => {
            let _ = forward(&req, upstream)?;
            drop(conn);
        }
        Some(Fault::ResetAfter) => {
            let _ = forward(&req, upstream)?;
            reset(conn);
        }
        Some(Fault::Answer(status, body)) => {
            let token = req.header("x-amz-security-token").unwrap_or_default();
            let body = body.replace("{token}", token);
            write!(
                conn,
                "HTTP/1.1 {status} Fault\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
        }
        Some(Fault::Outage(d)) => {
            let _ = forward(&req, upstream)?;
            state.lock().unwrap().outage_until = Some(Instant::now() + d);
            reset(conn);
        }
    }
    Ok(())
}
