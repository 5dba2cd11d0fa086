//! The S3 API as the bucket backend uses it: requests signed by rusty-s3
//! (sans-IO) and sent with reqwest to one of several endpoints of the same
//! store, failing over to the next when one stops answering. No secret and
//! no signed URL ever reaches a message: errors name the endpoint and what
//! was asked, never the URL that was sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use rusty_s3::actions::{ListObjectsV2, ListObjectsV2Response};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use url::Url;

/// How long a signed request stays valid: long enough for a slow start,
/// short enough that a leaked URL is soon worthless.
const SIGNED_FOR: Duration = Duration::from_secs(300);

/// Longest wait to connect to an endpoint before trying the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest silence while reading a reply, headers or body.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Keys asked for per listing page (S3's own maximum).
const PAGE_KEYS: usize = 1000;

/// The most a listing page may weigh: a thousand keys of the longest S3
/// allows (1,024 bytes), escaped, with their XML around them.
const MAX_PAGE_BYTES: u64 = 8 << 20;

/// The most of an error reply's body read for its `<Code>`.
const MAX_ERROR_BYTES: u64 = 64 << 10;

/// What reaching the store needs: where it is and who asks. Its `Debug`
/// shows the access key's id, never the secret.
#[derive(Debug, Clone)]
pub struct Store {
    /// The store's endpoints (nodes of one store), tried in this order.
    pub endpoints: Vec<Url>,
    /// The region requests are signed for.
    pub region: String,
    /// The access key.
    pub credentials: Credentials,
    /// Path-style URLs (`endpoint/bucket/key`), as S3-compatible stores
    /// want; virtual-hosted ones for AWS itself.
    pub path_style: bool,
}

/// A request the store did not answer as asked.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// No endpoint answered.
    #[error("no endpoint of the object store answered {what} (last: {endpoint}: {reason})")]
    Unreachable {
        /// The request.
        what: String,
        /// The last endpoint tried.
        endpoint: String,
        /// Why it failed, without its URL.
        reason: String,
    },
    /// The store answered with an error status.
    #[error("the object store answered {what} with {status}{code}")]
    Status {
        /// The request.
        what: String,
        /// The HTTP status.
        status: StatusCode,
        /// S3's error code in brackets, after a space, when the body named
        /// one; else empty.
        code: String,
    },
    /// A reply could not be understood.
    #[error("the object store's reply to {what} is malformed: {reason}")]
    Malformed {
        /// The request.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// An endpoint or bucket name cannot make a URL.
    #[error("cannot address bucket {bucket} at {endpoint}: {reason}")]
    Address {
        /// The bucket.
        bucket: String,
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

impl S3Error {
    /// The HTTP status, when the store answered with an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            S3Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One endpoint's view of the bucket.
struct Endpoint {
    bucket: Bucket,
    /// Scheme, host and port: how messages name it.
    shown: String,
}

/// One bucket on one store, over all its endpoints.
pub struct Client {
    endpoints: Vec<Endpoint>,
    /// The endpoint that answered last: tried first.
    current: AtomicUsize,
    credentials: Credentials,
    http: reqwest::Client,
}

/// What a `HEAD` tells of an object.
#[derive(Debug, Clone)]
pub struct Head {
    /// Its ETag, as the store gave it (quotes and all): what `If-Match` pins.
    pub etag: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its last modification, in seconds since the Unix epoch.
    pub modified: i64,
}

impl Client {
    /// A client of `bucket` on `store`. Sends nothing yet.
    pub fn new(store: &Store, bucket: &str) -> Result<Self, S3Error> {
        let style = match store.path_style {
            true => UrlStyle::Path,
            false => UrlStyle::VirtualHost,
        };
        let endpoints = store
            .endpoints
            .iter()
            .map(|url| {
                let shown = url.origin().ascii_serialization();
                Bucket::new(url.clone(), style, bucket.to_owned(), store.region.clone())
                    .map(|bucket| Endpoint {
                        bucket,
                        shown: shown.clone(),
                    })
                    .map_err(|err| S3Error::Address {
                        bucket: bucket.to_owned(),
                        endpoint: shown,
                        reason: err.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let http = reqwest::Client::builder()
            // A signed request is for one URL: a redirect is an error.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|err| S3Error::Address {
                bucket: bucket.to_owned(),
                endpoint: "-".into(),
                reason: err.without_url().to_string(),
            })?;
        Ok(Self {
            endpoints,
            current: AtomicUsize::new(0),
            credentials: store.credentials.clone(),
            http,
        })
    }

    /// Sends the request `sign` makes for an endpoint, to the endpoint that
    /// answered last and then to each other in turn, until one answers
    /// with anything but a server error. `what` names the request in
    /// messages.
    async fn send(
        &self,
        what: &str,
        sign: impl Fn(&Bucket, &Credentials) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, S3Error> {
        let count = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed) % count.max(1);
        let mut last = None;
        for step in 0..count {
            let at = (first + step) % count;
            let endpoint = &self.endpoints[at];
            let failed = match sign(&endpoint.bucket, &self.credentials).send().await {
                Ok(reply) if !reply.status().is_server_error() || step + 1 == count => {
                    if at != first {
                        self.current.store(at, Ordering::Relaxed);
                        tracing::warn!(
                            "object store endpoint {} did not answer; now using {}",
                            self.endpoints[first].shown,
                            endpoint.shown
                        );
                    }
                    return Ok(reply);
                }
                Ok(reply) => reply.status().to_string(),
                Err(err) => describe(err),
            };
            last = Some((endpoint.shown.clone(), failed));
        }
        let (endpoint, reason) = last.unwrap_or_else(|| ("-".into(), "no endpoints".into()));
        Err(S3Error::Unreachable {
            what: what.to_owned(),
            endpoint,
            reason,
        })
    }

    /// How many endpoints the store has.
    pub fn endpoints(&self) -> usize {
        self.endpoints.len()
    }

    /// Moves on from the endpoint in use, after it failed midway through a
    /// reply: the next request starts with the next one.
    pub fn skip_endpoint(&self) {
        let count = self.endpoints.len().max(1);
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |at| {
                Some((at + 1) % count)
            });
    }

    /// The object's ETag, size and age; `None` if there is none at `key`.
    pub async fn head(&self, key: &str) -> Result<Option<Head>, S3Error> {
        let what = format!("HEAD of {key:?}");
        let reply = self
            .send(&what, |bucket, credentials| {
                let url = bucket.head_object(Some(credentials), key).sign(SIGNED_FOR);
                self.http.head(url)
            })
            .await?;
        if reply.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let reply = success(reply, &what).await?;
        described(&reply, &what).map(Some)
    }

    /// Bytes `start..end` of the object at `key` (fewer where it ends
    /// first), pinned to `etag` when one is given: the reply, its body still
    /// to read. `Ok(None)` when there is no such object, it is another
    /// version now, or it ends before `start`.
    pub async fn get(
        &self,
        key: &str,
        (start, end): (u64, u64),
        etag: Option<&str>,
    ) -> Result<Option<reqwest::Response>, S3Error> {
        let what = format!("GET of {key:?} from byte {start}");
        let last = end.saturating_sub(1).max(start);
        let reply = self
            .send(&what, |bucket, credentials| {
                let url = bucket.get_object(Some(credentials), key).sign(SIGNED_FOR);
                let request = self
                    .http
                    .get(url)
                    .header("range", format!("bytes={start}-{last}"));
                match etag {
                    Some(etag) => request.header("if-match", etag),
                    None => request,
                }
            })
            .await?;
        match reply.status() {
            StatusCode::NOT_FOUND
            | StatusCode::PRECONDITION_FAILED
            | StatusCode::RANGE_NOT_SATISFIABLE => Ok(None),
            _ => success(reply, &what).await.map(Some),
        }
    }

    /// A small object whole, if it exists and is at most `limit` bytes.
    pub async fn get_small(&self, key: &str, limit: u64) -> Result<Option<Bytes>, S3Error> {
        let what = format!("GET of {key:?}");
        let reply = self
            .send(&what, |bucket, credentials| {
                let url = bucket.get_object(Some(credentials), key).sign(SIGNED_FOR);
                self.http.get(url)
            })
            .await?;
        if reply.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let reply = success(reply, &what).await?;
        match body_within(reply, limit).await {
            Ok(body) => Ok(body.map(Bytes::from)),
            Err(err) => Err(S3Error::Malformed {
                what,
                reason: describe(err),
            }),
        }
    }

    /// Stores `body` at `key`, replacing what is there.
    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), S3Error> {
        let what = format!("PUT of {key:?}");
        let reply = self
            .send(&what, |bucket, credentials| {
                let url = bucket.put_object(Some(credentials), key).sign(SIGNED_FOR);
                self.http.put(url).body(body.clone())
            })
            .await?;
        success(reply, &what).await.map(drop)
    }

    /// One page of the keys under `prefix`: with `delimiter`, those deeper
    /// than one more `/` are folded into common prefixes. `token` continues
    /// from the page before; `max` caps the keys.
    pub async fn list_page(
        &self,
        prefix: &str,
        delimiter: bool,
        token: Option<&str>,
        max: Option<usize>,
    ) -> Result<ListObjectsV2Response, S3Error> {
        let what = format!("listing of {prefix:?}");
        let reply = self
            .send(&what, |bucket, credentials| {
                let mut list = bucket.list_objects_v2(Some(credentials));
                if !prefix.is_empty() {
                    list.with_prefix(prefix);
                }
                if delimiter {
                    list.with_delimiter("/");
                }
                if let Some(token) = token {
                    list.with_continuation_token(token);
                }
                list.with_max_keys(max.unwrap_or(PAGE_KEYS));
                self.http.get(list.sign(SIGNED_FOR))
            })
            .await?;
        let reply = success(reply, &what).await?;
        let malformed = |reason: String| S3Error::Malformed {
            what: what.clone(),
            reason,
        };
        let body = body_within(reply, MAX_PAGE_BYTES)
            .await
            .map_err(|err| malformed(describe(err)))?
            .ok_or_else(|| malformed(format!("larger than {MAX_PAGE_BYTES} bytes")))?;
        let text = String::from_utf8(body).map_err(|_| malformed("not UTF-8".into()))?;
        ListObjectsV2::parse_response(&text).map_err(|err| malformed(err.to_string()))
    }
}

/// The reply if it succeeded; else its status and S3's error code.
async fn success(reply: reqwest::Response, what: &str) -> Result<reqwest::Response, S3Error> {
    let status = reply.status();
    if status.is_success() {
        return Ok(reply);
    }
    // S3 names the error in <Code>; nothing else of the body is shown.
    let body = body_within(reply, MAX_ERROR_BYTES)
        .await
        .ok()
        .flatten()
        .map(|body| String::from_utf8_lossy(&body).into_owned())
        .unwrap_or_default();
    let code = body
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code)
        .filter(|code| code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|code| format!(" ({code})"))
        .unwrap_or_default();
    Err(S3Error::Status {
        what: what.to_owned(),
        status,
        code,
    })
}

/// A reply's whole body, if it is at most `limit` bytes; `Ok(None)` as soon
/// as it is larger (it is not read further).
async fn body_within(
    mut reply: reqwest::Response,
    limit: u64,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if reply.content_length().is_some_and(|len| len > limit) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(piece) = reply.chunk().await? {
        if (body.len() + piece.len()) as u64 > limit {
            return Ok(None);
        }
        body.extend_from_slice(&piece);
    }
    Ok(Some(body))
}

/// What a reply's headers tell of its object: its ETag, its whole size
/// (from `Content-Range` for part of it) and its age.
pub fn described(reply: &reqwest::Response, what: &str) -> Result<Head, S3Error> {
    let header = |name: &str| {
        reply
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let malformed = |reason: &str| S3Error::Malformed {
        what: what.to_owned(),
        reason: reason.to_owned(),
    };
    let etag = header("etag")
        .ok_or_else(|| malformed("no ETag"))?
        .to_owned();
    let size = match reply.status() {
        StatusCode::PARTIAL_CONTENT => header("content-range")
            .and_then(|range| range.rsplit_once('/'))
            .and_then(|(_, total)| total.parse().ok())
            .ok_or_else(|| malformed("no whole size in Content-Range"))?,
        _ => header("content-length")
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| malformed("no Content-Length"))?,
    };
    let modified = header("last-modified")
        .and_then(|text| jiff::fmt::rfc2822::parse(text).ok())
        .map_or(0, |zoned| zoned.timestamp().as_second());
    Ok(Head {
        etag,
        size,
        modified,
    })
}

/// Where the bytes of a `206 Partial Content` reply start, from its
/// `Content-Range` (`bytes START-END/SIZE`).
pub fn range_start(reply: &reqwest::Response) -> Option<u64> {
    reply
        .headers()
        .get("content-range")?
        .to_str()
        .ok()?
        .strip_prefix("bytes ")?
        .split_once('-')?
        .0
        .parse()
        .ok()
}

/// A transport error as words, without the signed URL it carries.
pub fn describe(err: reqwest::Error) -> String {
    let kind = match () {
        () if err.is_connect() => "cannot connect",
        () if err.is_timeout() => "timed out",
        () if err.is_body() || err.is_decode() => "the reply broke off",
        () => "request failed",
    };
    let mut text = kind.to_owned();
    let err = err.without_url();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
