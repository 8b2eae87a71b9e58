//! A minimal blocking HTTP/1.1 client for JSON endpoints, over one real TCP
//! connection: for tests, examples and smoke checks of a deployment, where a full
//! HTTP client would cost more to build than it gives. It keeps its connection alive
//! and reads bodies by `Content-Length` or in chunks (a streamed answer, chunk by
//! chunk if asked); it is not a general client.
//!
//! ```no_run
//! let at: std::net::SocketAddr = "127.0.0.1:8000".parse().unwrap();
//! let mut conn = prism_serve::client::Conn::open(at).unwrap();
//! let a = conn.send("POST", "/echo", r#"{"x": 1}"#).unwrap();
//! assert_eq!(a.status, 200);
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One keep-alive connection to an HTTP server.
pub struct Conn {
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
}

/// A response: its status and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

impl Answer {
    /// The body as JSON; panics, naming the body, if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Conn {
    /// Connects, with a 30 s limit on each read.
    pub fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(stream),
            request: Vec::with_capacity(1024),
        })
    }

    /// Sends one request with a JSON body and reads its response (a streamed one to
    /// its end).
    pub fn send(&mut self, method: &str, path: &str, body: &str) -> io::Result<Answer> {
        let mut streamed = self.stream(method, path, body)?;
        let mut all = Vec::new();
        while let Some(chunk) = streamed.next_chunk()? {
            all.extend_from_slice(&chunk);
        }
        let body = String::from_utf8(all).map_err(|e| bad(format!("a body not UTF-8: {e}")))?;
        Ok(Answer {
            status: streamed.status,
            body,
        })
    }

    /// Sends one request and reads its status and headers; the body is then read
    /// chunk by chunk, as the server sends it.
    pub fn stream(&mut self, method: &str, path: &str, body: &str) -> io::Result<Streamed<'_>> {
        self.request.clear();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        self.reader.get_mut().write_all(&self.request)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("not an HTTP status line: {line:?}")))?;
        let (mut length, mut chunked) = (0, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("a bad Content-Length: {h:?}")))?;
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.trim().eq_ignore_ascii_case("chunked");
                }
            }
        }
        Ok(Streamed {
            status,
            left: if chunked { None } else { Some(length) },
            conn: self,
        })
    }
}

/// A response being read: its status, then its body chunk by chunk.
pub struct Streamed<'a> {
    /// The HTTP status.
    pub status: u16,
    /// The bytes left of a body of known length; `None` for a chunked one.
    left: Option<usize>,
    conn: &'a mut Conn,
}

impl Streamed<'_> {
    /// The next chunk of the body as the server sent it; `None` at its end.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let reader = &mut self.conn.reader;
        match self.left {
            Some(0) => Ok(None),
            Some(n) => {
                let mut body = vec![0; n];
                reader.read_exact(&mut body)?;
                self.left = Some(0);
                Ok(Some(body))
            }
            None => {
                let mut line = String::new();
                reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| bad(format!("a bad chunk size: {line:?}")))?;
                let mut chunk = vec![0; size];
                reader.read_exact(&mut chunk)?;
                let mut crlf = [0; 2];
                reader.read_exact(&mut crlf)?;
                if size == 0 {
                    self.left = Some(0);
                    return Ok(None);
                }
                Ok(Some(chunk))
            }
        }
    }
}
