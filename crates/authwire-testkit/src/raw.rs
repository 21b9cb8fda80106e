//! A TCP server that misbehaves below HTTP, for fault injection.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How a [`RawServer`] misbehaves on every connection.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Misbehavior {
    /// Accept, read the request, never answer.
    AcceptThenHang,
    /// Send the status line, headers and part of the body, then close the connection.
    CloseMidResponse,
    /// Send a valid token response one byte per second.
    SlowDrip,
}

/// A loopback TCP server that answers every connection with a [`Misbehavior`]. Stops when dropped.
pub struct RawServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawServer {
    /// Start on `127.0.0.1:0`.
    pub async fn start(behavior: Misbehavior) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    match behavior {
                        Misbehavior::AcceptThenHang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        Misbehavior::CloseMidResponse => {
                            let _ = socket
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 120\r\n\r\n{\"access_token\":\"tru")
                                .await;
                            let _ = socket.shutdown().await;
                        }
                        Misbehavior::SlowDrip => {
                            let body = br#"{"access_token":"slow","token_type":"Bearer","expires_in":3600}"#;
                            let response = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
                                body.len(),
                                String::from_utf8_lossy(body)
                            );
                            for byte in response.bytes() {
                                if socket.write_all(&[byte]).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}
