//! Fuzzes the gRFC A2 choice list of DNS TXT `grpc_config=` records: no input
//! may panic, an error always names a reason and a place inside the list,
//! and the choice does not depend on anything but the input and the client.
#![no_main]

use grpc_lb_resolve::service_config::{choose, from_txt, ClientSelector, TXT_ATTRIBUTE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte is the client's percentage draw, the rest the record.
    let Some((roll, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let client = ClientSelector::new().hostname("fuzz-host").roll(*roll);

    let chosen = from_txt(&text, &client);
    match &chosen {
        Ok(Some(config)) => {
            let _ = config.method_config("/helloworld.Greeter/SayHello");
            let _ = config.choose_policy(|name| name == "round_robin");
        }
        Ok(None) => {}
        Err(error) => {
            let message = error.to_string();
            assert!(message.starts_with("invalid grpc_config: "), "{message}");
            assert!(error.path().is_empty() || error.path().starts_with('['), "{message}");
        }
    }
    // The same record and client always choose the same way.
    assert_eq!(from_txt(&text, &client), chosen);
    // Without the attribute, a record is no config at all.
    if !text.starts_with(TXT_ATTRIBUTE) {
        assert_eq!(chosen, Ok(None));
    } else {
        assert_eq!(choose(&text[TXT_ATTRIBUTE.len()..], &client), chosen);
    }
});
