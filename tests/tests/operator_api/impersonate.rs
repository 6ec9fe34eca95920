//! A kube client that acts as a ServiceAccount (impersonation by the test's admin
//! credentials: the API server authorizes every request as that ServiceAccount, with its
//! groups), optionally recording every request the API server refused with 403.

use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context as _, Result};
use futures::future::BoxFuture;
use kube::Client;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use sluice_testkit::kube_env::KubeEnv;

/// The user name of a ServiceAccount, as its tokens authenticate.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// A client of the shared API server acting as `user`; with `forbidden`, every refused
/// request is recorded there.
pub async fn client_as(env: &KubeEnv, user: &str, forbidden: Option<&Forbidden>) -> Result<Client> {
    let path = env.kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .context("loading the kubeconfig")?;
    // Only the user: the API server then adds the ServiceAccount's groups
    // (system:serviceaccounts, system:serviceaccounts:<namespace>, system:authenticated)
    // as it does for the ServiceAccount's own tokens.
    config.auth_info.impersonate = Some(user.to_string());
    let builder = ClientBuilder::try_from(config).context("building a kube client")?;
    Ok(match forbidden {
        Some(f) => builder.with_layer(f).build(),
        None => builder.build(),
    })
}

/// The requests (method and path) the API server answered with 403 Forbidden.
#[derive(Clone, Default)]
pub struct Forbidden(Arc<Mutex<Vec<String>>>);

impl Forbidden {
    /// What was refused since the last call (and forgets it).
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn note(&self, request: String) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request);
    }
}

impl<S> tower::Layer<S> for Forbidden {
    type Service = Recording<S>;

    fn layer(&self, inner: S) -> Recording<S> {
        Recording {
            inner,
            forbidden: self.clone(),
        }
    }
}

/// The client's HTTP stack, wrapped to note refused requests.
pub struct Recording<S> {
    inner: S,
    forbidden: Forbidden,
}

impl<S, Req, Res> tower::Service<http::Request<Req>> for Recording<S>
where
    S: tower::Service<http::Request<Req>, Response = http::Response<Res>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    Res: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Req>) -> Self::Future {
        let what = format!("{} {}", request.method(), request.uri());
        let forbidden = self.forbidden.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if response.status() == http::StatusCode::FORBIDDEN {
                forbidden.note(what);
            }
            Ok(response)
        })
    }
}
