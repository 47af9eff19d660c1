//! CloudWatch's wire protocol, bridged for the emulator.
//!
//! The current `aws-sdk-cloudwatch` speaks Smithy RPC v2 CBOR (a CBOR body POSTed to
//! `/service/GraniteServiceVersion20100801/operation/<Op>`, header `smithy-protocol: rpc-v2-cbor`;
//! <https://smithy.io/2.0/additional-specs/protocols/smithy-rpc-v2.html>). moto 5.2.5 speaks
//! CloudWatch's Query and JSON 1.0 protocols only, with no plan for CBOR
//! (getmoto/moto#9195, #9253), so a CBOR request to moto is a 404. CloudWatch in AWS accepts all
//! three (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch-protocols-faq.html>).
//!
//! This bridge sits in front of moto for CloudWatch only (the functions get it as
//! `AWS_ENDPOINT_URL_CLOUDWATCH`, the SDK's service-specific endpoint variable): it decodes the
//! CBOR request into JSON, forwards it as JSON 1.0 (`X-Amz-Target: GraniteServiceVersion20100801.<Op>`,
//! keeping the signature headers and the user agent, so moto records who called what), and
//! encodes moto's JSON answer back into CBOR, with RPC v2's timestamp tag (1) on the timestamp
//! members and doubles where the model has doubles. Everything the functions send and read is
//! still moto's: the bridge changes the encoding, never the content.

use std::sync::Arc;

use minicbor::data::{IanaTag, Tag, Type};
use serde_json::{Map, Number, Value};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::http::{read_body, read_head, request, write_response};
use crate::{io_err, HarnessError};

/// CloudWatch's JSON 1.0 target prefix (its Smithy service shape name).
pub const TARGET_PREFIX: &str = "GraniteServiceVersion20100801";

pub struct CborBridge {
    /// `http://127.0.0.1:PORT`: the value of `AWS_ENDPOINT_URL_CLOUDWATCH`.
    pub endpoint: String,
    task: JoinHandle<()>,
}

impl CborBridge {
    pub async fn start(upstream: &str) -> Result<CborBridge, HarnessError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io_err("cbor bridge: bind"))?;
        let port = listener
            .local_addr()
            .map_err(io_err("cbor bridge: local_addr"))?
            .port();
        let upstream = Arc::new(upstream.to_string());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, upstream.clone()));
            }
        });
        Ok(CborBridge {
            endpoint: format!("http://127.0.0.1:{port}"),
            task,
        })
    }
}

impl Drop for CborBridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connection(stream: TcpStream, upstream: Arc<String>) {
    // The answer goes out as head and body in two writes: without TCP_NODELAY the body waits for
    // the client's delayed ACK (~40 ms a call on Linux).
    let _ = stream.set_nodelay(true);
    let mut conn = BufReader::new(stream);
    loop {
        let Ok(Some(head)) = read_head(&mut conn).await else {
            return;
        };
        let Ok(body) = read_body(&mut conn, &head, false).await else {
            return;
        };
        let close = head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let path = head.start_line.split_whitespace().nth(1).unwrap_or("/");
        let (status, headers, answer) = match bridge(&upstream, path, &head, &body).await {
            Ok(r) => r,
            Err(message) => {
                eprintln!("cbor-bridge: {message}");
                let body = encode(
                    &serde_json::json!({
                        "__type": "InternalFailure", "message": message
                    }),
                    "",
                );
                (500, cbor_headers(), body)
            }
        };
        let headers: Vec<(&str, String)> = headers.iter().map(|(k, v)| (*k, v.clone())).collect();
        if write_response(conn.get_mut(), status, &headers, &answer, close)
            .await
            .is_err()
            || close
        {
            return;
        }
    }
}

fn cbor_headers() -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/cbor".to_string()),
        ("smithy-protocol", "rpc-v2-cbor".to_string()),
    ]
}

async fn bridge(
    upstream: &str,
    path: &str,
    head: &crate::http::Head,
    body: &[u8],
) -> Result<(u16, Vec<(&'static str, String)>, Vec<u8>), String> {
    let operation = path
        .split('?')
        .next()
        .and_then(|p| p.rsplit_once("/operation/"))
        .map(|(_, op)| op.to_string())
        .ok_or_else(|| format!("not an RPC v2 request path: {path}"))?;
    let input = if body.is_empty() {
        Value::Object(Map::new())
    } else {
        decode(body)?
    };
    let json = serde_json::to_vec(&input).map_err(|e| e.to_string())?;
    let target = format!("{TARGET_PREFIX}.{operation}");
    let mut headers: Vec<(&str, &str)> = vec![
        ("Content-Type", "application/x-amz-json-1.0"),
        ("X-Amz-Target", &target),
    ];
    for keep in [
        "authorization",
        "x-amz-date",
        "x-amz-security-token",
        "user-agent",
        "x-amz-user-agent",
        "amz-sdk-invocation-id",
        "amz-sdk-request",
    ] {
        if let Some(v) = head.header(keep) {
            headers.push((keep, v));
        }
    }
    let answer = request("POST", &format!("{upstream}/"), Some(&json), &headers)
        .await
        .map_err(|e| format!("{operation}: moto: {e}"))?;
    let mut out_headers = cbor_headers();
    if let Some(id) = answer.header("x-amzn-requestid") {
        out_headers.push(("x-amzn-requestid", id.to_string()));
    }
    let body = if answer.body.is_empty() {
        encode(&Value::Object(Map::new()), "")
    } else {
        let v: Value = serde_json::from_slice(&answer.body).map_err(|e| {
            format!(
                "{operation}: moto answered {} with no JSON ({e}): {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )
        })?;
        encode(&v, "")
    };
    Ok((answer.status, out_headers, body))
}

/// CBOR (as the SDK writes it) to JSON: tag-1 timestamps become epoch seconds, which is how the
/// JSON protocols write timestamps.
pub fn decode(bytes: &[u8]) -> Result<Value, String> {
    let mut d = minicbor::Decoder::new(bytes);
    let v = value(&mut d).map_err(|e| format!("CBOR request: {e}"))?;
    Ok(v)
}

fn value(d: &mut minicbor::Decoder<'_>) -> Result<Value, minicbor::decode::Error> {
    Ok(match d.datatype()? {
        Type::Bool => Value::Bool(d.bool()?),
        Type::Null | Type::Undefined => {
            d.skip()?;
            Value::Null
        }
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => Value::from(d.u64()?),
        Type::I8 | Type::I16 | Type::I32 | Type::I64 => Value::from(d.i64()?),
        Type::F16 | Type::F32 | Type::F64 => {
            let f = d.f64()?;
            Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        Type::String => Value::String(d.str()?.to_string()),
        Type::StringIndef => {
            let mut s = String::new();
            for part in d.str_iter()? {
                s.push_str(part?);
            }
            Value::String(s)
        }
        Type::Array | Type::ArrayIndef => {
            let mut items = Vec::new();
            match d.array()? {
                Some(n) => {
                    for _ in 0..n {
                        items.push(value(d)?);
                    }
                }
                None => {
                    while d.datatype()? != Type::Break {
                        items.push(value(d)?);
                    }
                    d.skip()?;
                }
            }
            Value::Array(items)
        }
        Type::Map | Type::MapIndef => {
            let mut map = Map::new();
            let mut entry = |d: &mut minicbor::Decoder<'_>| -> Result<(), minicbor::decode::Error> {
                let k = match value(d)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                let v = value(d)?;
                map.insert(k, v);
                Ok(())
            };
            match d.map()? {
                Some(n) => {
                    for _ in 0..n {
                        entry(d)?;
                    }
                }
                None => {
                    while d.datatype()? != Type::Break {
                        entry(d)?;
                    }
                    d.skip()?;
                }
            }
            Value::Object(map)
        }
        Type::Tag => {
            // Tag 1 (epoch seconds) is the only tag RPC v2 uses for what CloudWatch sends.
            d.tag()?;
            value(d)?
        }
        other => {
            return Err(minicbor::decode::Error::message(format!(
                "unsupported CBOR item {other:?}"
            )))
        }
    })
}

/// Members that are timestamps in CloudWatch's model (what the functions read back).
fn is_timestamp(key: &str) -> bool {
    key.ends_with("Timestamp") || key == "Timestamps" || key == "StartTime" || key == "EndTime"
}

/// Members that are doubles in CloudWatch's model: always written as CBOR floats, since the SDK
/// reads a double only from a float (moto may write `70` for 70.0).
fn is_double(key: &str) -> bool {
    matches!(
        key,
        "Threshold"
            | "Average"
            | "Maximum"
            | "Minimum"
            | "Sum"
            | "SampleCount"
            | "Value"
            | "Values"
    )
}

/// JSON (as moto answers) to CBOR, typed by member name (see [`is_timestamp`], [`is_double`]).
pub fn encode(v: &Value, key: &str) -> Vec<u8> {
    let mut e = minicbor::Encoder::new(Vec::new());
    write(&mut e, v, key);
    e.into_writer()
}

fn write(e: &mut minicbor::Encoder<Vec<u8>>, v: &Value, key: &str) {
    // Writing into a Vec cannot fail.
    let _ = match v {
        Value::Null => e.null().map(|_| ()),
        Value::Bool(b) => e.bool(*b).map(|_| ()),
        Value::Number(n) => {
            if is_timestamp(key) {
                let _ = e.tag(Tag::from(IanaTag::Timestamp));
                e.f64(n.as_f64().unwrap_or(0.0)).map(|_| ())
            } else if is_double(key) || n.is_f64() {
                e.f64(n.as_f64().unwrap_or(0.0)).map(|_| ())
            } else if let Some(u) = n.as_u64() {
                e.u64(u).map(|_| ())
            } else {
                e.i64(n.as_i64().unwrap_or(0)).map(|_| ())
            }
        }
        Value::String(s) => {
            if is_timestamp(key) {
                // An ISO 8601 timestamp, as some moto versions write them.
                if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                    let _ = e.tag(Tag::from(IanaTag::Timestamp));
                    let secs =
                        t.timestamp() as f64 + f64::from(t.timestamp_subsec_millis()) / 1000.0;
                    let _ = e.f64(secs);
                    return;
                }
            }
            e.str(s).map(|_| ())
        }
        Value::Array(items) => {
            let _ = e.array(items.len() as u64);
            for item in items {
                write(e, item, key);
            }
            Ok(())
        }
        Value::Object(map) => {
            let _ = e.map(map.len() as u64);
            for (k, item) in map {
                let _ = e.str(k);
                write(e, item, k);
            }
            Ok(())
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_request_round_trips_and_timestamps_and_doubles_are_typed() {
        let v = json!({"AlarmNames": ["a"], "Threshold": 70, "Period": 300,
                       "StateUpdatedTimestamp": 1781704800.5, "Nested": {"Average": 2}});
        let bytes = encode(&v, "");
        let back = decode(&bytes).unwrap();
        assert_eq!(back["AlarmNames"], json!(["a"]));
        assert_eq!(back["Threshold"], json!(70.0));
        assert_eq!(back["Period"], json!(300));
        assert_eq!(back["StateUpdatedTimestamp"], json!(1781704800.5));
        assert_eq!(back["Nested"]["Average"], json!(2.0));
        // The timestamp carries tag 1, as RPC v2 requires.
        let mut d = minicbor::Decoder::new(&bytes);
        d.map().unwrap();
        let mut tagged = false;
        while d.datatype().is_ok() {
            if d.datatype().unwrap() == Type::Tag {
                assert_eq!(d.tag().unwrap(), Tag::from(IanaTag::Timestamp));
                tagged = true;
            } else {
                d.skip().unwrap();
            }
        }
        assert!(tagged);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(&[0xff, 0x00, 0x13]).is_err());
        assert!(decode(&[0xbf]).is_err());
    }
}
