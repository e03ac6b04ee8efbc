//! Artifacts: upload large data once (`PUT /v1/artifacts`) and refer to it in inputs and
//! results as `{"$artifact": "sha256:…"}` ([`artifact_ref`]); download it streamed, checked
//! against its address.

use std::path::Path;
use std::time::Duration;

use baton_api::ArtifactStored;
use reqwest::header;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{problem, Client, ClientError, Result};

/// Longest an artifact's upload or download may take (256 MiB at 1 MiB/s is about 4 minutes).
pub const ARTIFACT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);

/// The JSON value that refers to an artifact in an input or a result.
pub fn artifact_ref(artifact: &str) -> Value {
    json!({ "$artifact": artifact })
}

impl Client {
    /// Uploads `bytes` as an artifact (`content_type` is recorded and served back).
    pub async fn put_artifact(
        &self,
        bytes: impl Into<reqwest::Body>,
        content_type: Option<&str>,
    ) -> Result<ArtifactStored> {
        self.put_artifact_body(bytes.into(), None, content_type)
            .await
    }

    /// Uploads the file at `path`, streamed from disk (never read whole into memory).
    pub async fn put_artifact_file(
        &self,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<ArtifactStored> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| local(path, "open", e))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| local(path, "read", e))?
            .len();
        self.put_artifact_body(reqwest::Body::from(file), Some(len), content_type)
            .await
    }

    async fn put_artifact_body(
        &self,
        body: reqwest::Body,
        len: Option<u64>,
        content_type: Option<&str>,
    ) -> Result<ArtifactStored> {
        let url = format!("{}/v1/artifacts", self.base);
        let mut rb = self
            .http
            .put(&url)
            .timeout(ARTIFACT_TRANSFER_TIMEOUT)
            .body(body);
        if let Some(token) = &self.token {
            rb = rb.bearer_auth(token);
        }
        if let Some(ct) = content_type {
            rb = rb.header(header::CONTENT_TYPE, ct);
        }
        // Lets the server refuse an upload over its limit before a byte is sent.
        if let Some(len) = len {
            rb = rb.header(header::CONTENT_LENGTH, len);
        }
        let res = rb.send().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            source: std::sync::Arc::new(e),
        })?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            source: std::sync::Arc::new(e),
        })?;
        if !status.is_success() {
            return Err(problem(status, &bytes, &url));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            detail: e.to_string(),
        })
    }

    /// Starts downloading an artifact (`sha256:<hex>` or the bare hex): its size and content
    /// type, and the bytes to read with [`ArtifactDownload::chunk`], or all at once.
    pub async fn artifact(&self, artifact: &str) -> Result<ArtifactDownload> {
        let url = format!("{}/v1/artifacts/{artifact}", self.base);
        let mut rb = self.http.get(&url).timeout(ARTIFACT_TRANSFER_TIMEOUT);
        if let Some(token) = &self.token {
            rb = rb.bearer_auth(token);
        }
        let res = rb.send().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            source: std::sync::Arc::new(e),
        })?;
        if !res.status().is_success() {
            let status = res.status();
            let bytes = res.bytes().await.unwrap_or_default();
            return Err(problem(status, &bytes, &url));
        }
        let etag = res
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned());
        let Some(artifact) = etag.filter(|e| e.starts_with("sha256:")) else {
            return Err(ClientError::Decode {
                url,
                detail: "the artifact came without its address (ETag)".into(),
            });
        };
        Ok(ArtifactDownload {
            artifact,
            size: res.content_length(),
            content_type: res
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            hasher: Sha256::new(),
            read: 0,
            res,
            url,
        })
    }
}

/// An artifact being downloaded. Its bytes are checked against its address as they are read:
/// the last [`ArtifactDownload::chunk`] fails if they do not hash to it.
pub struct ArtifactDownload {
    /// `sha256:<hex>`.
    pub artifact: String,
    pub size: Option<u64>,
    pub content_type: Option<String>,
    hasher: Sha256,
    read: u64,
    res: reqwest::Response,
    url: String,
}

impl ArtifactDownload {
    /// The next chunk of bytes, or `None` once all were read and checked.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        let chunk = self.res.chunk().await.map_err(|e| ClientError::Transport {
            url: self.url.clone(),
            source: std::sync::Arc::new(e),
        })?;
        match chunk {
            Some(c) => {
                self.hasher.update(&c);
                self.read += c.len() as u64;
                Ok(Some(c))
            }
            None => {
                let digest = std::mem::take(&mut self.hasher).finalize();
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                let complete = self.size.is_none_or(|s| s == self.read);
                if !complete || format!("sha256:{hex}") != self.artifact {
                    return Err(ClientError::Decode {
                        url: self.url.clone(),
                        detail: format!(
                            "the {} bytes received are not artifact {}",
                            self.read, self.artifact
                        ),
                    });
                }
                Ok(None)
            }
        }
    }

    /// Every byte, in memory: for artifacts known to be small.
    pub async fn bytes(mut self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.size.unwrap_or(0).min(64 << 20) as usize);
        while let Some(c) = self.chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    /// Writes the bytes to `path` as they arrive, then checks them; returns how many. A
    /// download that fails leaves no file at `path`.
    pub async fn save(mut self, path: &Path) -> Result<u64> {
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = std::path::PathBuf::from(part);
        let mut file = tokio::fs::File::create(&part)
            .await
            .map_err(|e| local(&part, "create", e))?;
        let written = async {
            let mut n = 0u64;
            while let Some(c) = self.chunk().await? {
                file.write_all(&c)
                    .await
                    .map_err(|e| local(&part, "write", e))?;
                n += c.len() as u64;
            }
            file.sync_all().await.map_err(|e| local(&part, "sync", e))?;
            tokio::fs::rename(&part, path)
                .await
                .map_err(|e| local(path, "write", e))?;
            Ok(n)
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        written
    }
}

fn local(path: &Path, what: &str, e: std::io::Error) -> ClientError {
    ClientError::Local(format!("cannot {what} {}: {e}", path.display()))
}
