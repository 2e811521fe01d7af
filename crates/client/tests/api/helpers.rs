use std::path::PathBuf;

use faceswap_client::faceswap_wire::{CreateRequest, SourceImage};
use faceswap_client::{Client, Credentials};
use faceswap_testkit::{TestApp, TestTenant};

/// A client with the tenant's client credentials.
pub fn client(app: &TestApp, tenant: &TestTenant) -> Client {
    Client::new(&app.base_url, credentials(tenant)).unwrap()
}

pub fn credentials(tenant: &TestTenant) -> Credentials {
    Credentials::Client {
        client_id: tenant.client_id.clone(),
        client_secret: tenant.client_secret.clone(),
    }
}

/// A create request with one face at `opts`.
pub fn create_request(opts: &str) -> CreateRequest {
    CreateRequest {
        source_image: vec![SourceImage {
            path: "https://images.example/face.jpg".into(),
            opts: opts.into(),
        }],
    }
}

pub const OPTS: &str = "150,170:230,170:190,215:190,255";

/// A file of the workspace's `testdata/`.
pub fn testdata_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}
