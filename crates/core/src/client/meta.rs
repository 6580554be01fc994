//! Metadata from the workers: file info, listings, invalidation, and raw
//! GETs of any endpoint.
//!
//! Info and listings go to the path's preferred workers through the
//! failover walk (`failover`): a worker fault of every one of them is
//! [`Error::WorkerUnavailable`] (or [`Error::Timeout`]), for the caller to
//! ask the UFS instead; a body that is not the expected JSON is a fault of
//! that worker. Invalidation goes to every worker at once, since any of
//! them may hold the path's metadata or pages.

use super::failover::{exhausted, Failover};
use super::request::{enc, parse_answer, Req};
use super::{Client, WorkerAddr};
use crate::error::{Error, Result};
use crate::info::FileInfo;

impl Client {
    /// File info of `url` (normalized) from its preferred workers.
    /// [`Error::NotFound`] when there is nothing there; a worker fault of
    /// every preferred worker gives [`Error::WorkerUnavailable`] (the caller
    /// asks the UFS instead).
    pub async fn info(&self, url: &str) -> Result<FileInfo> {
        let q = format!("/v1/info?path={}", enc(url));
        let mut infos: Vec<FileInfo> = self.metadata_get(url, &q).await?;
        if infos.is_empty() {
            return Err(Error::NotFound {
                path: url.to_string(),
            });
        }
        Ok(infos.swap_remove(0))
    }

    /// The children of directory `url` (normalized); a file lists itself.
    /// Errors as [`Client::info`].
    pub async fn list(&self, url: &str) -> Result<Vec<FileInfo>> {
        let q = format!("/v1/files?path={}", enc(url));
        self.metadata_get(url, &q).await
    }

    /// Tell every worker to forget `url` (and everything under it with
    /// `recursive`): metadata and pages. Workers are asked concurrently. An
    /// error that is not a worker fault is returned; unreachable workers
    /// are counted and logged, and their fault is returned only when no
    /// worker could be told.
    pub async fn invalidate(&self, url: &str, recursive: bool) -> Result<()> {
        let workers = self.workers();
        if workers.is_empty() {
            return Err(Error::NoWorkers(format!("cannot invalidate {url}")));
        }
        let q = format!("/v1/invalidate?path={}&recursive={recursive}", enc(url));
        let results = self.post_to_each(&workers, &q, url).await;
        let mut fault = None;
        let mut any_ok = false;
        for r in results {
            match r {
                Ok(_) => any_ok = true,
                Err(e) if e.is_worker_fault() => fault = Some(e),
                Err(e) => return Err(e),
            }
        }
        match fault {
            Some(e) if !any_ok => Err(e),
            _ => Ok(()),
        }
    }

    /// POST `path_and_query` to each of `workers` concurrently, once each;
    /// a worker fault is counted and marks the worker failed. One result
    /// per worker, in order.
    pub(crate) async fn post_to_each(
        &self,
        workers: &[WorkerAddr],
        path_and_query: &str,
        about: &str,
    ) -> Vec<Result<String>> {
        futures::future::join_all(workers.iter().map(|w| async move {
            let res = self.send_text(w, Req::post(path_and_query, about)).await;
            if let Err(e) = &res {
                if e.is_worker_fault() {
                    self.note_failure(w, e);
                }
            }
            res
        }))
        .await
    }

    /// Raw GET of a worker endpoint path (e.g. `"/metrics"`) with the auth
    /// header; returns the body text. One attempt, no retries.
    pub async fn get_text(&self, worker: &WorkerAddr, path: &str) -> Result<String> {
        self.send_text(worker, Req::get(path, path)).await
    }

    /// GET `path_and_query` from the preferred workers of `url` in order,
    /// with retries on worker faults, and parse the JSON answer; a body that
    /// is not the expected JSON is a fault of that worker
    /// ([`Error::WorkerUnavailable`]).
    async fn metadata_get<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        path_and_query: &str,
    ) -> Result<T> {
        let prefs = self.workers_for(url);
        if prefs.is_empty() {
            return Err(Error::NoWorkers(format!("no worker for {url}")));
        }
        let answer = self
            .on_preferred(&prefs, |w| async move {
                let body = self.send_text(w, Req::get(path_and_query, url)).await?;
                Ok((body, w))
            })
            .await;
        match answer {
            Ok((body, w)) => parse_answer(w, url, "answer", &body),
            Err(Failover::Request(e)) => Err(e),
            Err(Failover::Exhausted(last)) => Err(exhausted(prefs[0].addr(), last)),
        }
    }
}
