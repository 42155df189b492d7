//! Fuzzes gRPC target parsing: no input may panic, and every target that
//! parses must print (`Display`) a canonical form that parses back to an
//! equal target and prints the same again.
#![no_main]

use grpc_lb_resolve::target::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 is replaced, not skipped, so byte-level mutations still
    // reach the parser.
    let input = String::from_utf8_lossy(data);
    check(&input, &[]);
    check(&input, &["etcd"]);
});

fn check(input: &str, schemes: &[&str]) {
    match Target::parse_with_schemes(input, schemes) {
        Ok(target) => {
            if schemes.is_empty() {
                assert_eq!(Target::parse(input).as_ref(), Ok(&target));
            }
            let shown = target.to_string();
            let again = Target::parse_with_schemes(&shown, schemes).unwrap_or_else(|e| {
                panic!("{input:?} parsed to {target:?}, but its form {shown:?} does not: {e}")
            });
            assert_eq!(again, target, "{input:?} -> {shown:?}");
            assert_eq!(again.to_string(), shown, "{input:?}");
            let _ = (target.scheme(), target.authority());
        }
        Err(err) => {
            assert_eq!(err.input(), input);
            let _ = err.to_string();
        }
    }
}
