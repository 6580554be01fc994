//! Whole-file reads (fsspec `cat` of many paths) with one request per file
//! where the file fits in `max_chunk`.
//!
//! Asking for the file's size first would cost a second round trip per
//! file, and most files of a training set are small. So the first request
//! asks for `[0, max_chunk)` and lets the worker cut it at the end of the
//! file: its size and version headers say whether anything is left. The
//! rest of a larger file goes through the chunked read (`read`) pinned to
//! that version, so a file that changes in between fails
//! ([`Error::ObjectChanged`]) rather than mixing two versions. The first
//! request walks the preferred workers like any other (`failover`); when
//! none answers, the whole file is left to the UFS and counted as one
//! fallback.

use bytes::Bytes;
use futures::stream::StreamExt;

use super::failover::{exhausted, Failover};
use super::{Client, RangeResult, WorkerAddr};
use crate::error::{Error, Result};
use crate::protocol::{FILE_SIZE_HEADER, VERSION_HEADER};

impl Client {
    /// Read whole files (fsspec `cat` of many paths, `cat_file` without a
    /// range) with one request per file where the file fits in `max_chunk`.
    ///
    /// The first request asks for `[0, max_chunk)`; the worker cuts it at the
    /// end of the file and names the size and version it served, so a small
    /// file costs one round trip and no metadata request. A larger file's
    /// rest is read with [`Client::read_into`] pinned to that version (a
    /// change in between is [`Error::ObjectChanged`], never a mix). Files are
    /// read concurrently, at most `max_parallel` at once; one result per
    /// input, in order. When no preferred worker answers the first request
    /// the file's result is [`Error::WorkerUnavailable`], for the caller to
    /// read it from the UFS; holes in the rest are reported as usual.
    pub async fn read_files(&self, urls: &[String]) -> Vec<Result<RangeResult>> {
        let mut pending = futures::stream::iter(urls.iter().enumerate())
            .map(|(i, url)| async move { (i, self.read_file(url).await) })
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
