//! The keeping endpoints (`/v1/pin`, `/v1/unpin`, `/v1/ttl`, `/v1/free`,
//! `/v1/rules`) driven through `oneshot` on a real `file://` mount, and the
//! configuration keys that steer them.

use alluxiofs_core::path::path_id;
use alluxiofs_worker::app::{app, AppState};
use alluxiofs_worker::config::{CacheDirConfig, WorkerConfig};
use alluxiofs_worker::policy::PolicyKind;
use alluxiofs_worker::rules::PinQuota;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use tower::ServiceExt;

const PAGE: u64 = 4096;

struct Env {
    _dir: tempfile::TempDir,
    state: Arc<AppState>,
    ufs: std::path::PathBuf,
}

impl Env {
    fn new(pin_quota: PinQuota, mount_quota: Option<(&str, u64)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ufs = dir.path().join("ufs");
        std::fs::create_dir_all(ufs.join("hot")).unwrap();
        std::fs::create_dir_all(ufs.join("cold")).unwrap();
        for i in 0..4 {
            std::fs::write(
                ufs.join(format!("hot/f{i}")),
                vec![i as u8; 3 * PAGE as usize],
            )
            .unwrap();
            std::fs::write(ufs.join(format!("cold/f{i}")), vec![9; 3 * PAGE as usize]).unwrap();
        }
        let config = WorkerConfig {
            cache_dirs: vec![CacheDirConfig::new(dir.path().join("cache"))],
            page_size: PAGE,
            memory_capacity: 0,
            capacity: 1 << 20,
            port: 0,
            pin_quota,
            mount_quotas: mount_quota
                .map(|(sub, b)| vec![(format!("{}/{sub}", ufs.display()), b)])
                .unwrap_or_default(),
            eviction_policy: PolicyKind::Lru,
            ..WorkerConfig::with_mounts([ufs.to_str().unwrap()])
        };
        let state = AppState::new(config).unwrap();
        Env {
            _dir: dir,
            state,
            ufs,
        }
    }

    fn url(&self, name: &str) -> String {
        format!("file://{}/{name}", self.ufs.display())
    }

    async fn call(&self, method: &str, uri: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let resp = app(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    async fn read(&self, name: &str) {
        let url = self.url(name);
        let uri = format!("/v1/range/{}?ufsFullPath={}", path_id(&url), enc(&url));
        let (status, _) = self.call_raw(&uri).await;
        assert_eq!(status, StatusCode::OK);
    }

    async fn call_raw(&self, uri: &str) -> (StatusCode, bytes::Bytes) {
        let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let resp = app(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn pin_free_ttl_and_rules_answer_json() {
    let env = Env::new(PinQuota::Bytes(1 << 20), None);
    for i in 0..4 {
        env.read(&format!("hot/f{i}")).await;
    }
    let hot = env.url("hot");
    let (status, body) = env
        .call("POST", &format!("/v1/pin?path={}", enc(&hot)))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pinned_pages"], 12);
    assert_eq!(body["pinned_bytes"], body["pinned_bytes_added"]);
    let (status, body) = env
        .call("POST", &format!("/v1/free?path={}", enc(&hot)))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "conflict", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("12 pinned pages"),
        "{body}"
    );
    let (status, body) = env
        .call("POST", &format!("/v1/ttl?path={}&seconds=60", enc(&hot)))
        .await;
    assert_eq!(
        (status, body["ttl_seconds"].as_u64()),
        (StatusCode::OK, Some(60))
    );
    let (_, rules) = env.call("GET", "/v1/rules").await;
    assert_eq!(rules["pins"][0], hot.as_str());
    assert_eq!(rules["ttls"][&hot], 60);
    assert_eq!(rules["eviction_policy"], "lru");
    let (status, body) = env
        .call(
            "POST",
            &format!("/v1/free?path={}&recursive=false", enc(&env.url("hot/f0"))),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = env
        .call("POST", &format!("/v1/free?path={}&force=true", enc(&hot)))
        .await;
    assert_eq!(
        (status, body["freed_pages"].as_u64()),
        (StatusCode::OK, Some(12))
    );
    let (status, body) = env
        .call("POST", &format!("/v1/unpin?path={}", enc(&hot)))
        .await;
    assert_eq!(
        (status, body["rules_removed"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let metrics = env.call_raw("/metrics").await.1;
    let text = String::from_utf8_lossy(&metrics);
    assert!(
        text.contains("alluxiofs_evictions_total{reason=\"free\"} 12\n"),
        "{text}"
    );
    assert!(text.contains("alluxiofs_pinned_bytes 0\n"));
}

#[tokio::test]
async fn refusals_and_bad_requests() {
    let env = Env::new(PinQuota::Bytes(2 * PAGE), None);
    env.read("cold/f0").await;
    let (status, body) = env
        .call("POST", &format!("/v1/pin?path={}", enc(&env.url("cold"))))
        .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(body["code"], "quota_exceeded", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("pin quota exceeded") && msg.contains("8192"),
        "{msg}"
    );
    let (status, _) = env.call("POST", "/v1/pin?path=file:///etc").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env.call("POST", "/v1/pin").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env
        .call(
            "POST",
            &format!("/v1/ttl?path={}&seconds=-1", enc(&env.url("cold"))),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env
        .call(
            "POST",
            &format!("/v1/free?path={}&force=maybe", enc(&env.url("cold"))),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn mount_quota_bounds_its_prefix() {
    let one = 4096 + 200;
    let env = Env::new(PinQuota::default(), Some(("cold", 4 * one)));
    for i in 0..4 {
        env.read(&format!("cold/f{i}")).await;
        env.read(&format!("hot/f{i}")).await;
    }
    let (_, rules) = env.call("GET", "/v1/rules").await;
    let q = &rules["mount_quotas"][0];
    assert!(q["used_bytes"].as_u64().unwrap() <= 4 * one, "{rules}");
    // 4 of the 12 cold pages fit in the quota; the 12 hot pages are untouched.
    assert_eq!(env.state.cache.store().gauges().pages, 16, "{rules}");
    let metrics = env.call_raw("/metrics").await.1;
    let text = String::from_utf8_lossy(&metrics);
    assert!(
        text.contains("alluxiofs_evictions_total{reason=\"mount_quota\"} 8\n"),
        "{text}"
    );
    assert!(
        text.contains("alluxiofs_evictions_total{reason=\"capacity\"} 0\n"),
        "{text}"
    );
}

#[test]
fn config_keys_from_yaml_env_and_flags() {
    use alluxiofs_worker::config::{Cli, ConfigLayer};
    use clap::Parser;
    let yaml = ConfigLayer::from_yaml(
        "mounts: [/data]\neviction_policy: lru\npin_quota: 25%\nmount_quotas: {/data/tmp: 1MiB}\n",
    )
    .unwrap();
    let mut cfg = WorkerConfig::default();
    yaml.apply(&mut cfg).unwrap();
    assert_eq!(cfg.eviction_policy, PolicyKind::Lru);
    assert_eq!(cfg.pin_quota, PinQuota::Percent(25));
    assert_eq!(cfg.mount_quotas, vec![("/data/tmp".to_string(), 1 << 20)]);
    let env = |k: &str| match k {
        "ALLUXIOFS_WORKER_MOUNTS" => Some("/data".to_string()),
        "ALLUXIOFS_WORKER_EVICTION_POLICY" => Some("s3fifo".to_string()),
        "ALLUXIOFS_WORKER_PIN_QUOTA" => Some("2GiB".to_string()),
        "ALLUXIOFS_WORKER_MOUNT_QUOTAS" => Some("/data/a=1MiB,/data/b=2MiB".to_string()),
        _ => None,
    };
    let cli =
        Cli::try_parse_from(["w", "--pin-quota", "10%", "--mount-quota", "/data/c=3MiB"]).unwrap();
    let cfg = WorkerConfig::from_cli_and_env(&cli, &env).unwrap();
    assert_eq!(cfg.eviction_policy, PolicyKind::S3Fifo);
    assert_eq!(
        cfg.pin_quota,
        PinQuota::Percent(10),
        "a flag beats the environment"
    );
    assert_eq!(cfg.mount_quotas, vec![("/data/c".to_string(), 3 << 20)]);
    let cli = Cli::try_parse_from(["w"]).unwrap();
    let cfg = WorkerConfig::from_cli_and_env(&cli, &env).unwrap();
    assert_eq!(cfg.pin_quota, PinQuota::Bytes(2 << 30));
    assert_eq!(cfg.mount_quotas.len(), 2);
    assert!(Cli::try_parse_from(["w", "--eviction-policy", "arc"]).is_err());
    assert!(ConfigLayer::from_yaml("pin_quota: 120%")
        .unwrap()
        .apply(&mut WorkerConfig::default())
        .is_err());
}
