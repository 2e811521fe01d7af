//! The examples run as a user would run them. `cargo test` builds them next to the test
//! binaries (`target/<profile>/examples/`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faceswap_testkit::TestApp;
use sqlx::PgPool;

fn example(name: &str) -> PathBuf {
    // The test binary is target/<profile>/deps/api-<hash>.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test -p faceswap-client` (without --test), which builds the examples",
        path.display()
    );
    path
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_seed_flow_example_runs_end_to_end_against_a_gateway(pool: PgPool) {
    let app = TestApp::builder()
        .sim_flags(&["--queue-delay-ms", "200"])
        .spawn(pool)
        .await;
    let tenant = app.tenant(5, None).await;
    let mut child = Command::new(example("seed_flow"))
        .env("FACESWAP_GATEWAY_URL", &app.base_url)
        .env("FACESWAP_CLIENT_ID", &tenant.client_id)
        .env("FACESWAP_CLIENT_SECRET", &tenant.client_secret)
        .env_remove("FACESWAP_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The gateway runs on this test's runtime: wait without blocking it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the example did not finish within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "exit {status}\n{stdout}\n{stderr}");
    for expected in [
        "detected 1 face",
        "faceswap_status 2",
        "app_id",
        "channel_id",
        "front_user_id",
        "front_rtc_token",
        "640x480 @ 20 fps",
        "music_standard",
        "updated",
        "closed",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    let page = faceswap_client::Client::new(&app.base_url, crate::helpers::credentials(&tenant))
        .unwrap()
        .list_sessions(&Default::default())
        .await
        .unwrap();
    assert_eq!(page.sessions.len(), 1);
    assert_eq!(page.sessions[0].state, "closed");
}
