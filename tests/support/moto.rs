//! A real S3-compatible server (moto) on a loopback port with a test bucket: pointing an
//! `Env` at it, and listing and reading what was uploaded.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::server::Reply;
use super::{Env, http, signal, wait_until};

/// A real S3-compatible server (moto) on a loopback port, stopped when dropped.
pub struct Moto {
    child: Child,
    pub address: SocketAddr,
}

pub const BUCKET: &str = "edgecron-test";

impl Moto {
    pub fn start() -> Moto {
        let port = super::free_port();
        Moto::start_on(port)
    }

    pub fn start_on(port: u16) -> Moto {
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server (pip install 'moto[server]')");
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let moto = Moto { child, address };
        wait_until(Duration::from_secs(30), || {
            TcpStream::connect(address).is_ok()
        });
        let created = http(address, "PUT", &format!("/{BUCKET}"), &[], None);
        assert_eq!(created.status, 200, "creating the bucket: {}", created.body);
        moto
    }

    /// Points `env` at this server.
    pub fn configure(&self, env: Env) -> Env {
        env.with("S3_BUCKET", BUCKET)
            .with("S3_ENDPOINT", &format!("http://{}", self.address))
            .with("S3_REGION", "eu-test-1")
            .with("S3_ACCESS_KEY_ID", "test")
            .with("S3_SECRET_ACCESS_KEY", "test")
            .with("S3_PATH_STYLE", "true")
            .with("S3_PREFIX", "backup/")
    }

    /// Every key in the bucket.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let path = match &token {
                Some(token) => format!(
                    "/{BUCKET}?list-type=2&continuation-token={}",
                    form_encode(token)
                ),
                None => format!("/{BUCKET}?list-type=2"),
            };
            let reply = http(self.address, "GET", &path, &[], None);
            assert_eq!(reply.status, 200, "{}", reply.body);
            for piece in reply.body.split("<Key>").skip(1) {
                keys.push(
                    piece
                        .split("</Key>")
                        .next()
                        .unwrap_or_default()
                        .replace("&amp;", "&"),
                );
            }
            token = reply
                .body
                .split("<NextContinuationToken>")
                .nth(1)
                .and_then(|rest| rest.split('<').next())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        keys
    }

    pub fn object(&self, key: &str) -> Reply {
        http(self.address, "GET", &format!("/{BUCKET}/{key}"), &[], None)
    }

    /// Every object under `prefix` with its body as text, read with signed requests (moto
    /// refuses an anonymous GET of an object a signed single PUT stored).
    pub fn objects(&self, prefix: &str) -> std::collections::BTreeMap<String, String> {
        self.per_object(
            prefix,
            "s3.get_object(Bucket=bucket, Key=key)['Body'].read().decode()",
        )
    }

    /// The `Content-Type` each object under `prefix` is served with.
    pub fn content_types(&self, prefix: &str) -> std::collections::BTreeMap<String, String> {
        self.per_object(
            prefix,
            "s3.head_object(Bucket=bucket, Key=key)['ContentType']",
        )
    }

    /// Creates another bucket on this server.
    pub fn create_bucket(&self, name: &str) {
        let created = http(self.address, "PUT", &format!("/{name}"), &[], None);
        assert_eq!(created.status, 200, "{}", created.body);
    }

    /// `expression` (Python, of `s3`, `bucket` and `key`) for each object under `prefix`,
    /// evaluated with signed requests through boto3.
    fn per_object(
        &self,
        prefix: &str,
        expression: &str,
    ) -> std::collections::BTreeMap<String, String> {
        let script = format!(
            "import boto3, json, sys
s3 = boto3.client('s3', endpoint_url='http://{address}', region_name='eu-test-1',
                  aws_access_key_id='test', aws_secret_access_key='test')
bucket = '{BUCKET}'
out = {{}}
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=sys.argv[1]):
    for item in page.get('Contents', []):
        key = item['Key']
        out[key] = {expression}
json.dump(out, sys.stdout)",
            address = self.address
        );
        let output = Command::new("python3")
            .args(["-c", &script, prefix])
            .output()
            .expect("python3 with boto3 (pip install 'moto[server]')");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("a JSON object per key")
    }

    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
