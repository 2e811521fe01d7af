//! The URL of every call, built once from the configured base and detect URLs.

use faceswap_wire::paths;
use http::Uri;
use url::Url;

use crate::Call;

/// Full URLs of the six calls, and each parsed once as the `Uri` a request carries.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    get_token: Url,
    detect: Url,
    create: Url,
    update: Url,
    close: Url,
    info: Url,
    uris: [Uri; Call::ALL.len()],
}

impl Endpoints {
    /// Checks both URLs and builds every call's URL; the error says which setting is wrong.
    pub(crate) fn new(base_url: &Url, detect_url: &Url) -> Result<Self, String> {
        check_http(base_url, "base_url")?;
        check_http(detect_url, "detect_url")?;
        if base_url.query().is_some() || base_url.fragment().is_some() {
            return Err(format!(
                "base_url `{base_url}` must not have a query or fragment: call paths are appended to it"
            ));
        }
        let mut endpoints = Self {
            get_token: join(base_url, paths::GET_TOKEN),
            detect: detect_url.clone(),
            create: join(base_url, paths::LIVE_CREATE),
            update: join(base_url, paths::LIVE_UPDATE),
            close: join(base_url, paths::LIVE_CLOSE),
            info: join(base_url, paths::LIVE_INFO),
            uris: Default::default(),
        };
        for call in Call::ALL {
            let url = endpoints.get(call);
            endpoints.uris[call as usize] = Uri::try_from(url.as_str())
                .map_err(|e| format!("`{url}` is not a usable request URI: {e}"))?;
        }
        Ok(endpoints)
    }

    /// The URL `call` posts to.
    pub(crate) fn get(&self, call: Call) -> &Url {
        match call {
            Call::GetToken => &self.get_token,
            Call::Detect => &self.detect,
            Call::Create => &self.create,
            Call::Update => &self.update,
            Call::Close => &self.close,
            Call::Info => &self.info,
        }
    }

    /// The request URI `call` posts to.
    pub(crate) fn uri(&self, call: Call) -> &Uri {
        &self.uris[call as usize]
    }
}

fn check_http(url: &Url, setting: &str) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{setting} `{url}` must be an http or https URL"));
    }
    if url.host().is_none() {
        return Err(format!("{setting} `{url}` has no host"));
    }
    // Requests authenticate with the account's bearer token; credentials in the URL would
    // not be sent, and the URL is printed in logs.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{setting} must not carry a user name or password (the upstream takes a bearer token)"
        ));
    }
    Ok(())
}

/// Appends `path` to the base's path. `Url::join` would replace the last segment of a prefix
/// (`http://h/prefix` + `/api` = `http://h/api`), which is never what an operator means.
fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(base: &str) -> Endpoints {
        let detect = Url::parse("http://detect.example/interface/detect-api/detect_faces").unwrap();
        Endpoints::new(&Url::parse(base).unwrap(), &detect).unwrap()
    }

    #[test]
    fn paths_are_appended_to_a_bare_host_with_or_without_a_trailing_slash() {
        for base in ["http://up.example:8080", "http://up.example:8080/"] {
            let e = endpoints(base);
            assert_eq!(
                e.get(Call::GetToken).as_str(),
                "http://up.example:8080/api/open/v3/getToken",
                "{base}"
            );
            assert_eq!(
                e.get(Call::Close).as_str(),
                "http://up.example:8080/api/open/v3/faceswap/live/close"
            );
        }
    }

    #[test]
    fn paths_are_appended_to_a_path_prefix_not_substituted_for_it() {
        for base in ["https://up.example/prefix", "https://up.example/prefix/"] {
            let e = endpoints(base);
            assert_eq!(
                e.get(Call::Create).as_str(),
                "https://up.example/prefix/api/open/v3/faceswap/live/create",
                "{base}"
            );
            assert_eq!(
                e.get(Call::Info).as_str(),
                "https://up.example/prefix/api/open/v3/faceswap/live/info"
            );
            assert_eq!(
                e.get(Call::Update).as_str(),
                "https://up.example/prefix/api/open/v3/faceswap/live/update"
            );
        }
        let deep = endpoints("http://h/a/b//");
        assert_eq!(
            deep.get(Call::GetToken).as_str(),
            "http://h/a/b/api/open/v3/getToken"
        );
    }

    #[test]
    fn every_request_uri_is_its_url() {
        let e = endpoints("https://up.example:8443/prefix");
        for call in Call::ALL {
            assert_eq!(e.uri(call).to_string(), e.get(call).as_str(), "{call}");
        }
    }

    #[test]
    fn detect_uses_its_url_exactly() {
        let e = endpoints("http://up.example/");
        assert_eq!(
            e.get(Call::Detect).as_str(),
            "http://detect.example/interface/detect-api/detect_faces"
        );
    }

    #[test]
    fn unusable_urls_are_refused_naming_the_setting() {
        let http = Url::parse("http://h/").unwrap();
        let ftp = Url::parse("ftp://h/").unwrap();
        let err = Endpoints::new(&ftp, &http).unwrap_err();
        assert!(err.contains("base_url"), "{err}");
        let err = Endpoints::new(&http, &Url::parse("mailto:a@b").unwrap()).unwrap_err();
        assert!(err.contains("detect_url"), "{err}");
        let err = Endpoints::new(&Url::parse("http://h/p?x=1").unwrap(), &http).unwrap_err();
        assert!(err.contains("query"), "{err}");
        let err = Endpoints::new(&Url::parse("http://u:secret@h/").unwrap(), &http).unwrap_err();
        assert!(
            err.contains("base_url") && err.contains("password"),
            "{err}"
        );
        assert!(!err.contains("secret"), "the password is not echoed: {err}");
    }
}
