use super::*;

fn parse(url: &str) -> Result<WorkerSpec, SpecError> {
    url.parse::<WorkerSpec>()
}

#[test]
fn each_scheme_names_its_protocol() {
    let http = parse("http://127.0.0.1:9000/").expect("http");
    assert_eq!(
        http.protocol,
        Protocol::HttpJson {
            base: "http://127.0.0.1:9000".into()
        }
    );
    assert_eq!(http.name, "http://127.0.0.1:9000");
    let grpcs = parse("grpcs://h:443?token_env=KEY").expect("grpcs");
    assert!(grpcs.uses_tls());
    assert_eq!(grpcs.token, Some(TokenSource::Env("KEY".into())));
    assert_eq!(
        grpcs.name, "grpcs://h:443",
        "the token's source is not in the name"
    );
    assert_eq!(
        parse("grpc://localhost:50051").expect("grpc").protocol,
        Protocol::Grpc {
            authority: "localhost:50051".into(),
            tls: false,
        }
    );
    assert_eq!(
        parse("kserve-v2+http://h:8000/v2/models/sim?input=text&output=hash")
            .expect("v2")
            .protocol,
        Protocol::KserveV2 {
            model_url: "http://h:8000/v2/models/sim".into(),
            input: "text".into(),
            output: "hash".into(),
        }
    );
    assert!(parse("kserve-v2+http://h:8000/prefix/v2/models/sim/versions/3").is_ok());
    assert_eq!(
        parse("openai+http://h:8000/v1").expect("openai").protocol,
        Protocol::OpenAi {
            base: "http://h:8000/v1".into(),
            model: "sim".into(),
        }
    );
}

#[test]
fn limits_come_from_the_query() {
    let spec = parse("grpc://h:1?max_batch_size=16&max_inflight_batches=4&timeout_ms=2500")
        .expect("valid");
    assert_eq!(
        spec.limits,
        WorkerLimits {
            max_batch_size: Some(16),
            max_inflight_batches: Some(4),
            timeout: Some(Duration::from_millis(2500)),
        }
    );
    assert_eq!(spec.name, "grpc://h:1");
}

#[test]
fn a_zone_comes_from_the_query_on_every_protocol() {
    for url in [
        "http://h:1?zone=eu-west-1a",
        "grpc://h:1?zone=eu-west-1a&max_inflight_batches=2",
        "kserve-v2+http://h:1/v2/models/m?zone=eu-west-1a&input=text",
        "openai+http://h:1/v1?model=m&zone=eu-west-1a",
    ] {
        let spec = parse(url).expect(url);
        assert_eq!(
            spec.zone.as_ref().map(Zone::as_str),
            Some("eu-west-1a"),
            "{url}"
        );
        assert!(!spec.name.contains("zone"), "{url}: the name has no query");
    }
    assert_eq!(parse("http://h:1").expect("plain").zone, None);
    for bad in [
        "http://h:1?zone=",
        "http://h:1?zone=a%20b",
        "http://h:1?zone=a&zone=b",
    ] {
        assert!(parse(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn https_variants_keep_their_protocol_and_use_tls() {
    for (url, base) in [
        ("https://h:1/p", "https://h:1/p"),
        ("https://h", "https://h:443"),
        ("http://h", "http://h:80"),
    ] {
        let spec = url.parse::<WorkerSpec>().expect(url);
        assert_eq!(
            spec.protocol,
            Protocol::HttpJson { base: base.into() },
            "{url}"
        );
        assert_eq!(spec.uses_tls(), url.starts_with("https"), "{url}");
    }
    let v2 = "kserve-v2+https://h:1/v2/models/m"
        .parse::<WorkerSpec>()
        .expect("v2");
    assert!(v2.uses_tls());
    let openai = "openai+https://h:1/v1"
        .parse::<WorkerSpec>()
        .expect("openai");
    assert!(openai.uses_tls());
    assert!(!"grpc://h:1".parse::<WorkerSpec>().expect("grpc").uses_tls());
}

#[test]
fn bad_urls_are_refused_with_the_reason() {
    for (url, expected) in [
        ("localhost:9000", "has no scheme"),
        ("grpcs://h:1/x", "host:port only"),
        ("http://h:1?token_file=a&token_env=B", "not both"),
        ("http://h:1?token_env=", "must not be empty"),
        ("tcp://h:1", "unknown scheme \"tcp\""),
        ("http://:9000", "empty host"),
        ("http://h:99999", "invalid port"),
        ("grpc://h:1/x", "host:port only"),
        ("kserve-v2+http://h:1/v2/models", "names a model"),
        (
            "kserve-v2+http://h:1/v2/models/m?input=",
            "input must not be empty",
        ),
        ("openai+http://h:1", "base path"),
        (
            "http://h:1?max_batch_size=0",
            "max_batch_size must be a whole number",
        ),
        (
            "http://h:1?timeout_ms=soon",
            "timeout_ms must be a whole number",
        ),
        ("http://h:1?model=x", "unknown query parameter \"model\""),
        (
            "http://h:1?max_batch_size=1&max_batch_size=2",
            "given twice",
        ),
        ("http://user:pw@h:1", "credentials"),
    ] {
        let error = parse(url).expect_err(url).to_string();
        assert!(error.contains(expected), "{url}: {error}");
    }
}
