//! A descriptor shortage (EMFILE) while exporting is a passing condition of
//! this host: the task is scheduled for retry, never FAILED for good, and
//! completes once descriptors are free again (issue 12).
//!
//! One test in a binary of its own: RLIMIT_NOFILE and the descriptor table
//! belong to the whole process, and the real service runs in it.

mod common;

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The descriptors of this process used up: the soft RLIMIT_NOFILE lowered
/// to a little above what is open, and the rest filled with duplicates of
/// one file. Dropping it closes them and restores the limit.
struct Exhausted {
    fds: Vec<OwnedFd>,
    old: libc::rlimit,
}

impl Exhausted {
    fn now() -> Exhausted {
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as libc::rlim_t;
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain libc calls on a valid rlimit struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
        let low = libc::rlimit {
            rlim_cur: (open + 64).min(old.rlim_cur),
            rlim_max: old.rlim_max,
        };
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        let null = File::open("/dev/null").unwrap();
        let mut fds = Vec::new();
        loop {
            // SAFETY: dup of a descriptor we own; the result is owned once valid.
            let fd = unsafe { libc::dup(null.as_raw_fd()) };
            if fd < 0 {
                let e = std::io::Error::last_os_error();
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        // `null` is closed on return: take its slot too.
        drop(null);
        if let Ok(f) = File::open("/dev/null") {
            fds.push(f.into());
        }
        assert!(File::open("/dev/null").is_err(), "descriptors left");
        Exhausted { fds, old }
    }
}

impl Drop for Exhausted {
    fn drop(&mut self) {
        self.fds.clear();
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.old) };
    }
}

const EXPORT_QUEUE_DN: &str = "dcmQueueName=Export,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

async fn trigger(http: &reqwest::Client, base: &str, study: &str) -> String {
    let r = http
        .post(format!(
            "{base}/aets/{AET}/rs/studies/{study}/export/STOWRSD"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let t: Value = r.json().await.unwrap();
    t["taskID"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn descriptor_shortage_is_retried_then_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    // STOWRSD's queue retries (dcmMaxRetries 10); here every second.
    let extra = format!(
        "dn: {EXPORT_QUEUE_DN}\nchangetype: modify\nreplace: dcmRetryDelay\ndcmRetryDelay: PT1S\n-\n\
         replace: dcmRetryDelayMultiplier\ndcmRetryDelayMultiplier: 100\n-\n\n"
    );
    let cfg = write_config(tmp.path(), rcv.addr.port(), &extra);
    let (warm_study, warm_files) = study(&tmp.path().join("a"), 1, 16);
    let (study_uid, files) = study(&tmp.path().join("b"), 2, 16);
    let data = tmp.path().join("data");
    import(&data, &[warm_files.clone(), files.clone()].concat()).await;
    let svc = Service::start(&cfg, &data).await;
    // One kept-alive connection to the API: requests need no new socket
    // while descriptors are used up.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(None)
        .build()
        .unwrap();
    let base = svc.url("");

    // A first export opens what every export shares (the client to the
    // destination and its connection pool) while descriptors are free.
    let id = trigger(&http, &base, &warm_study).await;
    let t = wait_done(&http, &base, &id, Duration::from_secs(30)).await;
    assert_eq!(t["status"], "COMPLETED", "{t}");

    let exhausted = Exhausted::now();
    let id = trigger(&http, &base, &study_uid).await;
    let task = eventually(Duration::from_secs(30), || async {
        let t: Value = http
            .get(format!("{base}/monitor/export/{id}"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        assert_ne!(
            t["status"], "FAILED",
            "a descriptor shortage ended the task: {t}"
        );
        if t["status"] == "SCHEDULED FOR RETRY" {
            Ok(t)
        } else {
            Err(format!("not scheduled for retry yet: {t}"))
        }
    })
    .await;
    drop(exhausted);
    let error = task["errorMessage"].as_str().unwrap_or_default();
    assert!(
        error.contains("descriptor shortage") && error.contains("EMFILE"),
        "the reason should name the descriptor shortage: {task}"
    );
    assert!(task["failures"].as_u64().unwrap() >= 1, "{task}");

    // Descriptors are free again: the next attempt stores both instances.
    let done = wait_done(&http, &base, &id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_arrived(&rcv, &files);
    svc.stop().await;
}
