//! `/v1/artifacts`: large data uploaded once, addressed by its SHA-256, and named in inputs and
//! results as `{"$artifact": "sha256:…"}`. Bodies are streamed both ways: an upload goes to the
//! store's staging file as it arrives, a download is sent chunk by chunk as the store reads it.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use baton_api::ArtifactStored;
use baton_core::artifact::ARTIFACT_REF_EXPECTED;
use baton_core::ArtifactRef;
use baton_engine::read::ArtifactMeta;
use futures_util::StreamExt;

use crate::auth::Caller;
use crate::problem::Problem;
use crate::AppState;

/// Longest `Content-Type` recorded with an artifact.
pub const CONTENT_TYPE_LEN_MAX: usize = 256;

/// Most bytes of a refused upload read and discarded before the refusal is sent, so that a
/// client still sending gets the answer rather than a reset connection; past it the connection
/// is closed.
pub const REFUSED_UPLOAD_DRAIN_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// Served for an artifact stored without a content type.
const OCTET_STREAM: &str = "application/octet-stream";

type St = AxState<Arc<AppState>>;

/// `sha256:<hex>` or the bare hex.
fn parse_ref(raw: &str) -> Result<ArtifactRef, Problem> {
    raw.parse().map_err(|_| {
        Problem::bad_request(
            "artifact_ref_invalid",
            format!("`{raw}` is not an artifact reference"),
        )
        .field("artifact", ARTIFACT_REF_EXPECTED)
    })
}

fn content_type(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if s.len() <= CONTENT_TYPE_LEN_MAX && !s.trim().is_empty() => {
            Ok(Some(s.trim().to_owned()))
        }
        _ => Err(Problem::bad_request(
            "invalid_content_type",
            "the Content-Type of an artifact must be printable ASCII",
        )
        .field(
            "Content-Type",
            format!("a media type of at most {CONTENT_TYPE_LEN_MAX} bytes"),
        )),
    }
}

/// Upload an artifact.
///
/// Stores the body as an artifact, addressed by its SHA-256 (`sha256:<hex>`), and answers its
/// reference. Content-addressed: uploading the same bytes again stores nothing new (`200` rather
/// than `201`), so an upload is safe to resend. Refer to it from any payload (an input, a result,
/// progress, signal data) as `{"$artifact": "sha256:…"}` to pass data larger than `--payload-bytes-
/// max`; an artifact is kept while a workflow refers to it.
#[utoipa::path(put, path = "/v1/artifacts",
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The artifact's bytes, streamed (any `Content-Type`, recorded and served back). At most `artifact_bytes_max` bytes (default 256 MiB; `baton serve --artifact-bytes-max`)."),
    responses(
        (status = 201, description = "stored; refer to it in an input or result as `{\"$artifact\": \"<artifact>\"}`", body = ArtifactStored),
        (status = 200, description = "the same bytes were stored already", body = ArtifactStored)))]
pub async fn put_artifact(
    AxState(s): St,
    _caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    let mut upload = match s.engine.artifact_upload(content_type(&headers)?, declared) {
        Ok(u) => u,
        Err(e) => return Ok(refuse_after_draining(stream, Problem::from(e)).await),
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if crate::extract::stalled(&e) {
                Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the upload stopped arriving: nothing came for longer than the body \
                     timeout (`baton serve --body-timeout`)",
                )
            } else {
                Problem::bad_request("body_unreadable", format!("the upload was cut short: {e}"))
            }
        })?;
        if let Err(e) = upload.write(&chunk).await {
            return Ok(refuse_after_draining(stream, Problem::from(e)).await);
        }
    }
    let put = upload.finish().await?;
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let artifact = put.meta.artifact;
    let mut res = (
        status,
        Json(ArtifactStored {
            artifact: artifact.to_string(),
            size: put.meta.size,
            content_type: put.meta.content_type,
            created: put.created,
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/artifacts/{artifact}")) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// Reads and discards what the client is still sending (up to
/// [`REFUSED_UPLOAD_DRAIN_BYTES_MAX`]), then answers `problem`.
async fn refuse_after_draining(
    mut stream: axum::body::BodyDataStream,
    problem: Problem,
) -> Response {
    let mut drained = 0u64;
    while drained <= REFUSED_UPLOAD_DRAIN_BYTES_MAX {
        match stream.next().await {
            Some(Ok(chunk)) => drained += chunk.len() as u64,
            _ => break,
        }
    }
    let mut res = problem.into_response();
    if drained > REFUSED_UPLOAD_DRAIN_BYTES_MAX {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// The headers an artifact is served with. Artifacts are untrusted bytes served from the
/// dashboard's origin: they are never rendered in its context (attachment, no sniffing, a
/// sandboxing policy).
fn artifact_headers(meta: &ArtifactMeta, headers: &mut HeaderMap) {
    let ct = meta.content_type.as_deref().unwrap_or(OCTET_STREAM);
    let ct = HeaderValue::from_str(ct).unwrap_or(HeaderValue::from_static(OCTET_STREAM));
    headers.insert(header::CONTENT_TYPE, ct);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", meta.artifact)) {
        headers.insert(header::ETAG, v);
    }
    // The bytes at an address never change.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    if let Ok(v) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", meta.artifact.hex()))
    {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
}

/// Whether the request's `If-None-Match` names this artifact.
fn not_modified(meta: &ArtifactMeta, request: &HeaderMap) -> bool {
    let etag = format!("\"{}\"", meta.artifact);
    request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// Download an artifact.
///
/// Streams the artifact's bytes with the `Content-Type` it was uploaded with (`application/octet-
/// stream` without one), an `ETag` of its digest (`If-None-Match` answers `304`) and its `Content-
/// Length`.
#[utoipa::path(get, path = "/v1/artifacts/{artifact}",
    params(("artifact" = String, Path, description = "`sha256:<64 hex>` or the bare hex", pattern = r"^(sha256:)?[0-9a-f]{64}$")),
    responses(
        (status = 200, description = "the bytes, streamed, with `Content-Length`, `ETag` and the content type given at upload", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "`If-None-Match` named this artifact")))]
pub async fn get_artifact(
    AxState(s): St,
    _caller: Caller,
    Path(raw): Path<String>,
    request: HeaderMap,
) -> Result<Response, Problem> {
    let artifact = parse_ref(&raw)?;
    let meta = s.engine.artifact(artifact).await?;
    if not_modified(&meta, &request) {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        artifact_headers(&meta, res.headers_mut());
        res.headers_mut().remove(header::CONTENT_LENGTH);
        return Ok(res);
    }
    let (meta, chunks) = s.engine.read_artifact(artifact).await?;
    let body = futures_util::stream::unfold(chunks, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((chunk.map(Bytes::from).map_err(std::io::Error::other), rx))
    });
    let mut res = Body::from_stream(body).into_response();
    artifact_headers(&meta, res.headers_mut());
    Ok(res)
}

/// Check an artifact.
///
/// Whether the artifact is stored, with its size and type in the headers and no body: how a client
/// skips uploading bytes Baton already has. A refusal has the status and headers of `GET` without
/// its body.
#[utoipa::path(head, path = "/v1/artifacts/{artifact}",
    params(("artifact" = String, Path, description = "`sha256:<64 hex>` or the bare hex", pattern = r"^(sha256:)?[0-9a-f]{64}$")),
    responses(
        (status = 200, description = "the artifact exists: its `Content-Length`, `ETag` and content type, no body")))]
pub async fn head_artifact(
    AxState(s): St,
    _caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    let meta = s.engine.artifact(parse_ref(&raw)?).await?;
    let mut res = StatusCode::OK.into_response();
    artifact_headers(&meta, res.headers_mut());
    Ok(res)
}
