//! A scripted browser for authorization-code logins: it follows the authorization URL to the
//! identity provider, takes the redirect it answers with, and delivers that (or a tampered
//! copy) to the client's loopback listener, as a person's browser would.

/// What the browser saw at the end of a login.
#[derive(Debug, Clone)]
pub struct Page {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
}

/// A browser that follows no redirect on its own: each step is the test's to take.
#[derive(Clone, Debug)]
pub struct ScriptedBrowser {
    http: reqwest::Client,
}

impl Default for ScriptedBrowser {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedBrowser {
    /// A new browser.
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("an HTTP client");
        Self { http }
    }

    /// Open the one-time login link a client hands its browser opener
    /// (`http://127.0.0.1:PORT/start/...`): returns the authorization URL it redirects to.
    /// A link opened a second time stops the login; this returns that page's status as an error.
    pub async fn open(&self, link: &str) -> Result<url::Url, String> {
        let response = self
            .http
            .get(link)
            .send()
            .await
            .map_err(|e| format!("GET the login link: {e}"))?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("the login link answered {status} without a redirect"))?;
        url::Url::parse(location).map_err(|e| format!("the redirect is not a URL: {e}"))
    }

    /// Visit the authorization URL (through the client's one-time login link when given one);
    /// returns where the identity provider redirects to (the client's callback, with `code` or
    /// `error`, `state` and `iss`).
    pub async fn authorize(&self, authorization_url: &str) -> Result<url::Url, String> {
        let authorization_url = match url::Url::parse(authorization_url) {
            Ok(u) if u.path().starts_with("/start/") => self.open(authorization_url).await?.to_string(),
            _ => authorization_url.to_owned(),
        };
        let response = self
            .http
            .get(&authorization_url)
            .send()
            .await
            .map_err(|e| format!("GET the authorization URL: {e}"))?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("the authorization endpoint answered {status} without a redirect"))?;
        url::Url::parse(location).map_err(|e| format!("the redirect is not a URL: {e}"))
    }

    /// Follow a redirect to the client's listener.
    pub async fn deliver(&self, callback: &url::Url) -> Result<Page, String> {
        let response = self
            .http
            .get(callback.clone())
            .send()
            .await
            .map_err(|e| format!("GET the callback: {e}"))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| format!("read the page: {e}"))?;
        Ok(Page { status, body })
    }

    /// Both steps: what a person who clicks "allow" gets.
    pub async fn login(&self, authorization_url: &str) -> Result<Page, String> {
        let callback = self.authorize(authorization_url).await?;
        self.deliver(&callback).await
    }
}

/// `url` with the query parameter `name` set to `value` (added if missing).
pub fn with_param(url: &url::Url, name: &str, value: &str) -> url::Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != name)
        .chain([(name.to_owned(), value.to_owned())])
        .collect();
    let mut changed = url.clone();
    changed.query_pairs_mut().clear().extend_pairs(pairs);
    changed
}
