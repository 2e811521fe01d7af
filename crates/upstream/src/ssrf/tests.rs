use super::*;

fn guard(allow: &[&str]) -> SsrfGuard {
    SsrfGuard::new(&allow.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
}

async fn forbidden_addr(g: &SsrfGuard, url: &str) -> IpAddr {
    match g.check(url).await {
        Err(SsrfError::Forbidden { addr, .. }) => addr,
        other => panic!("{url}: expected Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn every_spelling_of_loopback_is_refused() {
    let g = SsrfGuard::default();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    for url in [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f.0.0.1/",
        "http://0x7f.1/",
        "https://127.1:8443/x",
    ] {
        assert_eq!(forbidden_addr(&g, url).await, loopback, "{url}");
    }
    for url in [
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
    ] {
        let addr = forbidden_addr(&g, url).await;
        assert!(addr.to_canonical().is_loopback(), "{url}: {addr}");
    }
}

#[tokio::test]
async fn localhost_is_refused_through_its_resolved_address() {
    let addr = forbidden_addr(&SsrfGuard::default(), "http://localhost/").await;
    assert!(addr.is_loopback(), "{addr}");
    let err = SsrfGuard::default()
        .check("http://LOCALHOST:9000/a.jpg")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SsrfError::Forbidden { host, .. } if host == "localhost"),
        "{err:?}"
    );
}

#[tokio::test]
async fn private_and_metadata_addresses_are_refused_with_a_clear_message() {
    let g = SsrfGuard::default();
    let err = g.check("http://10.1.2.3/").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "image_url host `10.1.2.3` resolves to 10.1.2.3, a private address; only public addresses are allowed"
    );
    let err = g
        .check("http://169.254.169.254/latest/meta-data")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("a link-local address"), "{err}");
    let err = g.check("http://[::1]/").await.unwrap_err();
    assert!(err.to_string().contains("`[::1]`"), "{err}");
}

#[tokio::test]
async fn non_http_and_malformed_urls_are_refused() {
    let g = SsrfGuard::default();
    assert_eq!(
        g.check("ftp://example.com/").await,
        Err(SsrfError::Scheme("ftp".into()))
    );
    assert_eq!(
        g.check("file:///etc/passwd").await,
        Err(SsrfError::Scheme("file".into()))
    );
    for bad in ["not a url", "", "http://", "http://[::1/"] {
        let err = g.check(bad).await.unwrap_err();
        assert!(matches!(err, SsrfError::InvalidUrl(_)), "{bad}: {err:?}");
    }
    assert!(
        SsrfError::Scheme("file".into())
            .to_string()
            .contains("http or https")
    );
}

#[tokio::test]
async fn public_literal_addresses_pass_without_dns() {
    let g = SsrfGuard::default();
    for url in [
        "http://93.184.216.34/",
        "https://8.8.8.8:8443/img.png?x=1",
        "http://[2606:4700::1111]/",
    ] {
        let parsed = g.check(url).await.unwrap();
        assert_eq!(parsed.as_str(), Url::parse(url).unwrap().as_str());
    }
}

#[tokio::test]
async fn allow_listed_networks_and_names_pass() {
    let g = guard(&["127.0.0.1/32"]);
    assert!(g.check("http://127.0.0.1:8080/x").await.is_ok());
    assert!(
        g.check("http://[::ffff:127.0.0.1]/").await.is_ok(),
        "mapped form of an allowed IPv4"
    );
    assert!(g.check("http://127.0.0.2/").await.is_err(), "only the /32");
    assert!(g.check("http://10.0.0.1/").await.is_err());

    let g = guard(&["LocalHost"]);
    assert!(g.check("http://localhost:9000/face.jpg").await.is_ok());
    assert!(
        g.check("http://127.0.0.1/").await.is_err(),
        "a name does not allow its address"
    );

    let g = guard(&["10.0.0.0/8", "::1", "[fd00::1]", "192.168.1.7"]);
    for url in [
        "http://10.9.9.9/",
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://192.168.1.7/",
    ] {
        assert!(g.check(url).await.is_ok(), "{url}");
    }
    assert!(g.check("http://192.168.1.8/").await.is_err());
}

#[test]
fn check_addr_applies_the_same_rule() {
    let g = guard(&["172.16.0.0/12"]);
    assert!(g.check_addr("172.20.1.1".parse().unwrap()).is_ok());
    assert!(g.check_addr("1.1.1.1".parse().unwrap()).is_ok());
    let addr: IpAddr = "192.168.0.1".parse().unwrap();
    assert_eq!(
        g.check_addr(addr),
        Err(SsrfError::Forbidden {
            host: "192.168.0.1".into(),
            addr
        })
    );
}

#[test]
fn allow_list_entries_are_parsed_or_refused_by_name() {
    let g = guard(&[
        " 10.1.2.3/8 ",
        "::1/128",
        "127.0.0.1",
        "Image-Host.internal",
    ]);
    assert_eq!(
        g.nets,
        ["10.0.0.0/8", "::1/128", "127.0.0.1/32"]
            .map(|s| s.parse::<IpNet>().unwrap())
            .to_vec()
    );
    assert_eq!(g.hosts, ["image-host.internal"]);
    assert!(guard(&[]).nets.is_empty() && guard(&[]).hosts.is_empty());
    for bad in [
        "",
        "10.0.0.0/33",
        "http://localhost",
        "300.1.1.1",
        "a b",
        "-x.example",
        "1.2.3",
    ] {
        let err = SsrfGuard::new(&[bad.to_owned()]).unwrap_err();
        assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
    }
}

#[test]
fn unresolvable_and_no_host_messages_are_tenant_facing() {
    let err = SsrfError::Unresolvable {
        host: "nope.invalid".into(),
        reason: "no addresses".into(),
    };
    assert_eq!(
        err.to_string(),
        "image_url host `nope.invalid` could not be resolved: no addresses"
    );
    assert_eq!(SsrfError::NoHost.to_string(), "image_url has no host");
}

#[tokio::test]
async fn upstream_fetched_urls_refuse_every_spelling_of_forbidden_space() {
    let g = SsrfGuard::default();
    for url in [
        "http://10.0.0.1/a.jpg",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f000001/",
        "http://localhost/",
        "http://LocalHost:8080/",
        "http://localhost./",
        "http://anything.localhost/",
    ] {
        assert!(
            matches!(
                g.check_upstream_fetched(url).await,
                Err(SsrfError::Forbidden { .. })
            ),
            "{url}"
        );
    }
    for url in [
        "file:///etc/passwd",
        "gopher://example.com/",
        "ftp://example.com/",
    ] {
        assert!(
            matches!(
                g.check_upstream_fetched(url).await,
                Err(SsrfError::Scheme(_))
            ),
            "{url}"
        );
    }
}

#[tokio::test]
async fn upstream_fetched_names_that_do_not_resolve_here_pass_but_direct_fetches_refuse_them() {
    let g = SsrfGuard::default();
    // Reserved names (RFC 2606/6761) never resolve, here or anywhere.
    for url in [
        "https://images.example/face.jpg",
        "http://nope.invalid/a.png",
    ] {
        assert!(g.check_upstream_fetched(url).await.is_ok(), "{url}");
        assert!(
            matches!(g.check(url).await, Err(SsrfError::Unresolvable { .. })),
            "{url}"
        );
    }
    assert!(
        guard(&["localhost"])
            .check_upstream_fetched("http://localhost:9000/a.jpg")
            .await
            .is_ok(),
        "an allow-listed name"
    );
}

#[tokio::test]
async fn several_upstream_fetched_urls_are_checked_at_once_and_the_first_refusal_is_named() {
    let g = SsrfGuard::default();
    let ok = g
        .check_all_upstream_fetched(&["https://a.example/1.jpg", "http://93.184.216.34/2.jpg"])
        .await
        .unwrap();
    assert_eq!(ok.len(), 2);
    let (index, err) = g
        .check_all_upstream_fetched(&[
            "https://a.example/1.jpg",
            "http://localhost/2.jpg",
            "http://10.0.0.1/3.jpg",
        ])
        .await
        .unwrap_err();
    assert_eq!(index, 1);
    let msg = err.message_for("sourceImage[1].path");
    assert!(
        msg.starts_with("sourceImage[1].path host `localhost` resolves to ")
            && msg.contains("a loopback address"),
        "{msg}"
    );
    assert!(g.check_all_upstream_fetched(&[]).await.unwrap().is_empty());
}
