//! Whole-file reads (fsspec `cat` of many paths): one request per owner
//! worker carrying all of its files, else one request per file.
//!
//! A file whose owner is on this node and has the file's head in page
//! files on disk is read from them (`local`), with no HTTP request.
//!
//! Asking for the file's size first would cost a second round trip per
//! file, and most files of a training set are small. So the first request
//! asks for `[0, max_chunk)` of each file and lets the worker cut it at the
//! end of the file: the size and version it names say whether anything is
//! left. The first requests of many files go as one batch per owner (the
//! first preferred worker not marked down; `batch` is the per-owner
//! dispatch); a file alone on its owner, a worker without the batch route
//! and every file a batch did not serve go through the per-file path (one
//! `GET /v1/range`, walking the preferred workers like any other request:
//! `failover`); when no worker answers, the whole file is left to the UFS
//! and counted as one fallback. The rest of a larger file goes through the
//! chunked read (`read`) pinned to the version of its head, so a file that
//! changes in between fails ([`Error::ObjectChanged`]) rather than mixing
//! two versions.

use std::collections::HashMap;

use bytes::Bytes;
use futures::stream::StreamExt;

use super::batch::Head;
use super::failover::{exhausted, Failover};
use super::{Client, RangeResult, WorkerAddr};
use crate::error::{Error, Result};
use crate::protocol::{FILE_SIZE_HEADER, VERSION_HEADER};

impl Client {
    /// Read whole files (fsspec `cat` of many paths, `cat_file` without a
    /// range): one batch request per owner worker for the files it owns
    /// (each file's first `max_chunk` bytes), one request per file where
    /// batching does not apply (see the module documentation).
    ///
    /// The worker cuts each file's head at the end of the file and names
    /// the size and version it served, so a small file costs no request
    /// of its own and no metadata request. A larger file's rest is read
    /// with [`Client::read_into`] pinned to that version (a change in
    /// between is [`Error::ObjectChanged`], never a mix). One result per
    /// input, in order. A file that no preferred worker served is
    /// [`Error::WorkerUnavailable`], for the caller to read it from the
    /// UFS; holes in the rest are reported as usual.
    pub async fn read_files(&self, urls: &[String]) -> Vec<Result<RangeResult>> {
        let heads = self.batch_heads(urls).await;
        self.finish_files(urls, heads).await
    }

    /// [`Client::read_files`] without batches: one request per file, as
    /// for a worker without the batch route (for comparisons and tests).
    pub async fn read_files_per_file(&self, urls: &[String]) -> Vec<Result<RangeResult>> {
        let heads = urls.iter().map(|_| Head::Unserved).collect();
        self.finish_files(urls, heads).await
    }

    /// The heads of `urls` from one batch per owner: the first preferred
    /// worker not marked down, when it owns two files or more and has the
    /// batch route. Every other file is [`Head::Unserved`].
    async fn batch_heads(&self, urls: &[String]) -> Vec<Head> {
        let mut heads: Vec<Head> = urls.iter().map(|_| Head::Unserved).collect();
        let mut owners: Vec<(WorkerAddr, Vec<usize>)> = Vec::new();
        let mut slot: HashMap<String, usize> = HashMap::new();
        for (i, url) in urls.iter().enumerate() {
            let prefs = self.workers_for(url);
            let Some(w) = prefs.into_iter().find(|w| self.skip_fault(w).is_none()) else {
                continue;
            };
            if self.lacks_batch(&w) {
                continue;
            }
            let k = *slot.entry(w.addr()).or_insert_with(|| {
                owners.push((w, Vec::new()));
                owners.len() - 1
            });
            owners[k].1.push(i);
        }
        // Same-node owners first: a file whose first `max_chunk` bytes are
        // all in page files on disk is read from them; the rest go on below.
        for (w, files) in owners.iter_mut() {
            let Some(ch) = self.local_channel(w).await else {
                continue;
            };
            let mine: Vec<&str> = files.iter().map(|&i| urls[i].as_str()).collect();
            let got = self.local_heads(w, &ch, &mine);
            let mut left = Vec::new();
            for (i, h) in files.iter().copied().zip(got) {
                match h {
                    Head::Unserved => left.push(i),
                    served => heads[i] = served,
                }
            }
            *files = left;
        }
        owners.retain(|(_, files)| files.len() > 1);
        let mut pending = futures::stream::iter(owners)
            .map(|(w, files)| async move {
                let mine: Vec<&str> = files.iter().map(|&i| urls[i].as_str()).collect();
                let got = self.fetch_heads(&w, &mine).await;
                (files, got)
            })
            .buffer_unordered(self.config.max_parallel.max(1));
        while let Some((files, got)) = pending.next().await {
            for (i, h) in files.into_iter().zip(got) {
                heads[i] = h;
            }
        }
        heads
    }

    /// Finish each file from its head (the rest of a large one), the
    /// per-file path for an unserved one; at most `max_parallel` at once.
    async fn finish_files(&self, urls: &[String], heads: Vec<Head>) -> Vec<Result<RangeResult>> {
        let mut pending = futures::stream::iter(urls.iter().zip(heads).enumerate())
            .map(|(i, (url, head))| async move {
                let r = match head {
                    Head::Served {
                        data,
                        size,
                        version,
                    } => self.read_rest(url, data, size, version).await,
                    Head::Failed(e) => Err(e),
                    Head::Unserved => self.read_file(url).await,
                };
                (i, r)
            })
            .buffer_unordered(self.config.max_parallel.max(1));
        let mut out: Vec<Option<Result<RangeResult>>> = (0..urls.len()).map(|_| None).collect();
        while let Some((i, r)) = pending.next().await {
            out[i] = Some(r);
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::InvalidArgument("read lost".into()))))
            .collect()
    }

    async fn read_file(&self, url: &str) -> Result<RangeResult> {
        let prefs = self.workers_for(url);
        let last = match self.on_preferred(&prefs, |w| self.get_head(w, url)).await {
            Ok((head, size, version)) => return self.read_rest(url, head, size, version).await,
            Err(Failover::Request(e)) => return Err(e),
            Err(Failover::Exhausted(last)) => last,
        };
        let owner = self.count_fallback(&prefs);
        Err(exhausted(owner, last))
    }

    /// The first `max_chunk` bytes of `url` from `w`, with the file size and
    /// version the worker reports.
    async fn get_head(
        &self,
        w: &WorkerAddr,
        url: &str,
    ) -> Result<(Vec<u8>, Option<u64>, Option<String>)> {
        let answer = self
            .get_range(w, url, None, 0, self.config.max_chunk)
            .await?;
        let size = answer
            .header(FILE_SIZE_HEADER)
            .and_then(|v| v.parse::<u64>().ok());
        let version = answer.header(VERSION_HEADER);
        let data = answer.bytes(self.config.max_chunk).await?;
        self.count_bytes(data.len() as u64);
        Ok((data, size, version))
    }

    async fn read_rest(
        &self,
        url: &str,
        mut head: Vec<u8>,
        size: Option<u64>,
        version: Option<String>,
    ) -> Result<RangeResult> {
        let have = head.len() as u64;
        let size = match size {
            Some(s) => s,
            // A worker that does not name the size sent the whole file if it
            // sent less than asked for.
            None if have < self.config.max_chunk => have,
            None => self.info(url).await?.length,
        };
        if size <= have {
            head.truncate(size as usize);
            return Ok(RangeResult {
                data: Bytes::from(head),
                holes: Vec::new(),
                fault: None,
            });
        }
        let total = usize::try_from(size)
            .map_err(|_| Error::InvalidArgument(format!("{url}: file too large")))?;
        head.resize(total, 0);
        let out = self
            .read_into(url, version.as_deref(), have, &mut head[have as usize..])
            .await?;
        head.truncate(have as usize + out.filled);
        Ok(RangeResult {
            data: Bytes::from(head),
            holes: out.holes,
            fault: out.fault,
        })
    }
}
