//! Just enough HTTP/1.1 for moto and the Lambda Runtime API, so the harness needs no
//! HTTP crates: a one-shot client and the message framing the emulator's server uses.

use std::io;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;

use crate::{io_err, HarnessError};

const MAX_HEAD: u64 = 64 * 1024;
// Lambda caps payloads at 6 MB; anything far beyond that is a framing bug.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// Start line plus headers (names lower-cased) of a request or response.
#[derive(Debug, Clone)]
pub struct Head {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
}

/// One request on a fresh connection (`Connection: close`); returns status and body.
/// No timeout of its own: wrap it in `tokio::time::timeout` where a hang is possible.
pub async fn http(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Result<(u16, Vec<u8>), HarnessError> {
    let response = request(method, url, body, headers).await?;
    Ok((response.status, response.body))
}

/// Like [`http`], keeping the response headers.
pub async fn request(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Result<Response, HarnessError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HarnessError::Http(format!("only http:// URLs are supported: {url}")))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let context = format!("{method} {url}");

    let stream = TcpStream::connect(authority)
        .await
        .map_err(io_err(context.clone()))?;
    let (reader, mut writer) = stream.into_split();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if body.is_some() || !matches!(method, "GET" | "HEAD") {
        head.push_str(&format!(
            "Content-Length: {}\r\n",
            body.map_or(0, <[u8]>::len)
        ));
    }
    head.push_str("\r\n");
    writer
        .write_all(head.as_bytes())
        .await
        .map_err(io_err(context.clone()))?;
    if let Some(body) = body {
        writer
            .write_all(body)
            .await
            .map_err(io_err(context.clone()))?;
    }
    writer.flush().await.map_err(io_err(context.clone()))?;

    let mut reader = BufReader::new(reader);
    let head = read_head(&mut reader)
        .await
        .map_err(io_err(context.clone()))?
        .ok_or_else(|| {
            HarnessError::Http(format!("{context}: connection closed before a response"))
        })?;
    let status = head
        .start_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| {
            HarnessError::Http(format!("{context}: bad status line {:?}", head.start_line))
        })?;
    let body = read_body(&mut reader, &head, true)
        .await
        .map_err(io_err(context))?;
    Ok(Response { status, head, body })
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut String,
) -> io::Result<usize> {
    line.clear();
    let n = (&mut *reader).take(MAX_HEAD).read_line(line).await?;
    if n as u64 == MAX_HEAD {
        return Err(invalid("header line too long"));
    }
    Ok(n)
}

/// Reads a start line and headers; `None` on a clean EOF before the message, which is
/// how a keep-alive client says goodbye.
pub async fn read_head<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<Head>> {
    let mut start_line = String::new();
    loop {
        if read_line(reader, &mut start_line).await? == 0 {
            return Ok(None);
        }
        if !start_line.trim().is_empty() {
            break;
        }
    }
    let mut headers = Vec::new();
    let mut line = String::new();
    loop {
        if read_line(reader, &mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        if headers.len() > 200 {
            return Err(invalid("too many headers"));
        }
    }
    Ok(Some(Head {
        start_line: start_line.trim_end().to_string(),
        headers,
    }))
}

/// Reads the body framed by `head`: Content-Length, chunked, or (responses only,
/// `until_eof`) everything up to the connection close.
pub async fn read_body<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    head: &Head,
    until_eof: bool,
) -> io::Result<Vec<u8>> {
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(reader).await;
    }
    match head.header("content-length") {
        Some(len) => {
            let len: usize = len
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {len:?}")))?;
            if len > MAX_BODY {
                return Err(invalid(format!("body of {len} bytes is too large")));
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).await?;
            Ok(body)
        }
        None if until_eof => {
            let mut body = Vec::new();
            (&mut *reader)
                .take(MAX_BODY as u64)
                .read_to_end(&mut body)
                .await?;
            Ok(body)
        }
        None => Ok(Vec::new()),
    }
}

// Streaming Lambda responses (and some servers) send chunked bodies.
async fn read_chunked<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        read_line(reader, &mut line).await?;
        let size_field = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_field, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_field:?}")))?;
        if size == 0 {
            // Trailers, if any, end with an empty line; their content is not needed.
            while read_line(reader, &mut line).await? > 0 && !line.trim().is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("chunked body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).await?;
    }
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a response with a Content-Length body.
pub async fn write_response<W: AsyncWrite + Unpin>(
    writer: &mut W,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    close: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    if close {
        head.push_str("Connection: close\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes()).await?;
    writer.write_all(body).await?;
    writer.flush().await
}
