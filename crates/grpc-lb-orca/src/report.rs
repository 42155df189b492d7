//! The typed load report and its per-call trailer, `endpoint-load-metrics-bin`.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use prost::Message as _;

use crate::proto;

/// The trailer in which a backend sends its load with each response:
/// `endpoint-load-metrics-bin` (gRFC A51; grpc-go `orca/internal`
/// `TrailerMetadataKey`).
pub const TRAILER: HeaderName = HeaderName::from_static("endpoint-load-metrics-bin");

/// gRPC's `-bin` values are standard base64, sent unpadded but accepted either
/// way (PROTOCOL-HTTP2.md). Trailing bits are tolerated as grpc-go's decoder does.
const BIN_VALUE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Reports up to this size decode without a heap buffer; a report carrying
/// only the named fields takes 45 bytes.
const STACK_BUFFER: usize = 256;

/// One backend's load report (`xds.data.orca.v3.OrcaLoadReport`), as sent in
/// the [`TRAILER`] of a call or on the out-of-band stream.
///
/// Values are as the backend sent them: the proto's ranges (utilizations
/// ≥ 0, memory ≤ 1, ...) are the sender's promise and are not checked here, as
/// in grpc-go. An unset field reads 0, which is also how weighted_round_robin
/// (gRFC A58) treats it. The deprecated integer `rps` (field 3) is skipped;
/// `rps_fractional` replaces it.
///
/// ```
/// use grpc_lb_orca::OrcaLoadReport;
///
/// let report = OrcaLoadReport {
///     cpu_utilization: 0.5,
///     rps_fractional: 120.0,
///     utilization: [("disk".to_string(), 0.25)].into(),
///     ..Default::default()
/// };
/// let bytes = report.encode_to_vec();
/// assert_eq!(OrcaLoadReport::decode(&bytes)?, report);
/// # Ok::<(), grpc_lb_orca::OrcaError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrcaLoadReport {
    /// CPU in use as a fraction of what is available; above 1.0 past the
    /// backend's soft limit (field 1).
    pub cpu_utilization: f64,
    /// Memory in use as a fraction of what is available, 0 to 1 (field 2).
    pub mem_utilization: f64,
    /// Application-defined utilization, may exceed 1.0 (field 9). gRFC A58
    /// prefers it to `cpu_utilization` when it is set.
    pub application_utilization: f64,
    /// Requests per second served by the backend (field 6).
    pub rps_fractional: f64,
    /// Errors per second served by the backend (field 7).
    pub eps: f64,
    /// What this request cost, per application-defined name (field 4). Only
    /// per-call reports carry it (gRFC A51).
    pub request_cost: HashMap<String, f64>,
    /// Utilization of application-defined resources, each 0 to 1 (field 5).
    pub utilization: HashMap<String, f64>,
    /// Application-defined metrics with no meaning to gRPC (field 8).
    pub named_metrics: HashMap<String, f64>,
}

/// A load report that could not be read.
///
/// ```
/// use grpc_lb_orca::{OrcaError, OrcaLoadReport, TRAILER};
///
/// let mut trailers = http::HeaderMap::new();
/// trailers.insert(TRAILER, http::HeaderValue::from_static("not base64!"));
/// let error = OrcaLoadReport::from_trailers(&trailers).unwrap_err();
/// assert!(matches!(error, OrcaError::NotBase64 { .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrcaError {
    /// The trailer appears more than once (or one value holds several,
    /// comma-separated): grpc-go refuses to pick one, and so does this.
    MultipleReports,
    /// The value is not base64.
    NotBase64 {
        /// What the base64 decoder found.
        detail: String,
    },
    /// The bytes are not an `OrcaLoadReport` protobuf.
    NotALoadReport(prost::DecodeError),
}

impl fmt::Display for OrcaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrcaError::MultipleReports => {
                f.pad("more than one endpoint-load-metrics-bin load report")
            }
            OrcaError::NotBase64 { detail } => {
                write!(f, "endpoint-load-metrics-bin is not base64: {detail}")
            }
            OrcaError::NotALoadReport(error) => {
                write!(f, "invalid OrcaLoadReport protobuf: {error}")
            }
        }
    }
}

impl std::error::Error for OrcaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OrcaError::NotALoadReport(error) => Some(error),
            _ => None,
        }
    }
}

impl OrcaLoadReport {
    /// Reads the per-call report from a response's trailers: `Ok(None)` when
    /// the backend sent none, an error when the [`TRAILER`] is malformed or
    /// repeated.
    ///
    /// This is what a pick's done callback calls with the trailers it
    /// receives. For a "Trailers-Only" response (a call that failed before any
    /// message) gRPC puts the trailers in the response headers; pass those.
    ///
    /// The value is decoded once here; share the result (e.g. in an `Arc`)
    /// rather than decode again for each interested policy (gRFC A51).
    ///
    /// ```
    /// use grpc_lb_orca::OrcaLoadReport;
    ///
    /// // What a server sends: its report, in a trailer next to grpc-status.
    /// let sent = OrcaLoadReport { application_utilization: 0.8, rps_fractional: 50.0, ..Default::default() };
    /// let mut trailers = http::HeaderMap::new();
    /// trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    /// trailers.insert(grpc_lb_orca::TRAILER, sent.to_header_value());
    ///
    /// // What a done callback does with the call's trailers.
    /// let received = OrcaLoadReport::from_trailers(&trailers)?.expect("a report");
    /// assert_eq!(received.application_utilization, 0.8);
    ///
    /// // A backend that does not report is not an error.
    /// assert_eq!(OrcaLoadReport::from_trailers(&http::HeaderMap::new())?, None);
    /// # Ok::<(), grpc_lb_orca::OrcaError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`OrcaError::MultipleReports`], [`OrcaError::NotBase64`] or
    /// [`OrcaError::NotALoadReport`].
    pub fn from_trailers(trailers: &HeaderMap) -> Result<Option<Self>, OrcaError> {
        let mut values = trailers.get_all(&TRAILER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(OrcaError::MultipleReports);
        }
        Self::from_header_value(value).map(Some)
    }

    /// Decodes one `endpoint-load-metrics-bin` value: base64 (padded or not)
    /// of a binary `OrcaLoadReport`.
    ///
    /// ```
    /// use grpc_lb_orca::OrcaLoadReport;
    ///
    /// // cpu_utilization = 0.5: 9 bytes, 12 base64 characters.
    /// let cpu = http::HeaderValue::from_static("CQAAAAAAAOA/");
    /// assert_eq!(OrcaLoadReport::from_header_value(&cpu)?.cpu_utilization, 0.5);
    ///
    /// // 14 bytes: 19 characters as gRPC sends them, 20 with the padding.
    /// let report = OrcaLoadReport { utilization: [("a".to_string(), 0.5)].into(), ..Default::default() };
    /// let unpadded = report.to_header_value();
    /// assert_eq!(unpadded.len(), 19);
    /// let padded = http::HeaderValue::try_from(format!("{}=", unpadded.to_str().unwrap())).unwrap();
    /// assert_eq!(OrcaLoadReport::from_header_value(&unpadded)?, report);
    /// assert_eq!(OrcaLoadReport::from_header_value(&padded)?, report);
    /// # Ok::<(), grpc_lb_orca::OrcaError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`OrcaError::MultipleReports`] for a comma-separated list,
    /// [`OrcaError::NotBase64`] or [`OrcaError::NotALoadReport`].
    pub fn from_header_value(value: &HeaderValue) -> Result<Self, OrcaError> {
        let text = value.as_bytes();
        // Commas are not base64: a comma means a proxy joined several values.
        if text.contains(&b',') {
            return Err(OrcaError::MultipleReports);
        }
        let not_base64 = |error: base64::DecodeError| OrcaError::NotBase64 {
            detail: error.to_string(),
        };
        let mut stack = [0u8; STACK_BUFFER];
        if base64::decoded_len_estimate(text.len()) <= STACK_BUFFER {
            let len = BIN_VALUE
                .decode_slice(text, &mut stack)
                .map_err(|error| match error {
                    base64::DecodeSliceError::DecodeError(error) => not_base64(error),
                    // The estimate is an upper bound, so the buffer is large enough.
                    base64::DecodeSliceError::OutputSliceTooSmall => OrcaError::NotBase64 {
                        detail: "value longer than its length announced".to_string(),
                    },
                })?;
            Self::decode(&stack[..len])
        } else {
            let bytes = BIN_VALUE.decode(text).map_err(not_base64)?;
            Self::decode(&bytes)
        }
    }

    /// Decodes a binary `OrcaLoadReport` protobuf (one message of the
    /// out-of-band stream, or a trailer's value after base64).
    ///
    /// # Errors
    ///
    /// [`OrcaError::NotALoadReport`] when the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Result<Self, OrcaError> {
        proto::OrcaLoadReport::decode(bytes)
            .map(Self::from)
            .map_err(OrcaError::NotALoadReport)
    }

    /// Encodes the report as a binary protobuf.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        proto::OrcaLoadReport::from(self.clone()).encode_to_vec()
    }

    /// Encodes the report as the value of the [`TRAILER`]: unpadded base64,
    /// as gRPC sends `-bin` values.
    pub fn to_header_value(&self) -> HeaderValue {
        self.clone().into_header_value()
    }

    /// [`to_header_value`](Self::to_header_value) without a copy of the maps.
    pub(crate) fn into_header_value(self) -> HeaderValue {
        let bytes = proto::OrcaLoadReport::from(self).encode_to_vec();
        HeaderValue::try_from(BIN_VALUE.encode(bytes)).expect("base64 is a valid header value")
    }

    /// True when no field is set: such a report tells a policy nothing, and
    /// the server side of this crate does not send it.
    pub fn is_empty(&self) -> bool {
        self.cpu_utilization == 0.0
            && self.mem_utilization == 0.0
            && self.application_utilization == 0.0
            && self.rps_fractional == 0.0
            && self.eps == 0.0
            && self.request_cost.is_empty()
            && self.utilization.is_empty()
            && self.named_metrics.is_empty()
    }
}

impl From<proto::OrcaLoadReport> for OrcaLoadReport {
    fn from(report: proto::OrcaLoadReport) -> Self {
        let proto::OrcaLoadReport {
            cpu_utilization,
            mem_utilization,
            request_cost,
            utilization,
            rps_fractional,
            eps,
            named_metrics,
            application_utilization,
            ..
        } = report;
        OrcaLoadReport {
            cpu_utilization,
            mem_utilization,
            application_utilization,
            rps_fractional,
            eps,
            request_cost,
            utilization,
            named_metrics,
        }
    }
}

impl From<OrcaLoadReport> for proto::OrcaLoadReport {
    fn from(report: OrcaLoadReport) -> Self {
        proto::OrcaLoadReport {
            cpu_utilization: report.cpu_utilization,
            mem_utilization: report.mem_utilization,
            request_cost: report.request_cost,
            utilization: report.utilization,
            rps_fractional: report.rps_fractional,
            eps: report.eps,
            named_metrics: report.named_metrics,
            application_utilization: report.application_utilization,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailers(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("grpc-status", HeaderValue::from_static("0"));
        for value in values {
            map.append(TRAILER, HeaderValue::from_static(value));
        }
        map
    }

    fn full_report() -> OrcaLoadReport {
        OrcaLoadReport {
            cpu_utilization: 0.5,
            mem_utilization: 0.25,
            application_utilization: 1.5,
            rps_fractional: 100.0,
            eps: 3.0,
            request_cost: [("db".to_string(), 12.0)].into(),
            utilization: [("disk".to_string(), 0.75)].into(),
            named_metrics: [("queue".to_string(), 7.0)].into(),
        }
    }

    #[test]
    fn every_field_round_trips_through_the_trailer() {
        let report = full_report();
        let mut map = HeaderMap::new();
        map.insert(TRAILER, report.to_header_value());
        assert_eq!(OrcaLoadReport::from_trailers(&map), Ok(Some(report)));
    }

    #[test]
    fn padded_and_unpadded_values_decode_alike() {
        // eps = 2.0 is 9 bytes: 12 base64 characters, no padding either way;
        // rps_fractional = 1.0 plus eps = 2.0 is 18 bytes: also none. Use a
        // 10-byte report (one-character map key) to get "==".
        let report = OrcaLoadReport {
            utilization: [("a".to_string(), 0.5)].into(),
            ..Default::default()
        };
        let unpadded = report.to_header_value();
        let unpadded = unpadded.to_str().unwrap();
        assert!(!unpadded.ends_with('='));
        let padding = "=".repeat((4 - unpadded.len() % 4) % 4);
        assert!(!padding.is_empty(), "the test needs a value that pads");
        let padded = HeaderValue::try_from(format!("{unpadded}{padding}")).unwrap();
        let unpadded = HeaderValue::try_from(unpadded).unwrap();
        assert_eq!(
            OrcaLoadReport::from_header_value(&padded),
            Ok(report.clone())
        );
        assert_eq!(OrcaLoadReport::from_header_value(&unpadded), Ok(report));
    }

    #[test]
    fn no_trailer_is_no_report() {
        assert_eq!(OrcaLoadReport::from_trailers(&trailers(&[])), Ok(None));
    }

    #[test]
    fn an_empty_value_is_an_empty_report() {
        let report = OrcaLoadReport::from_trailers(&trailers(&[""]))
            .unwrap()
            .unwrap();
        assert!(report.is_empty());
    }

    #[test]
    fn repeated_or_joined_trailers_are_refused() {
        let one = "CQAAAAAAAOA/";
        assert_eq!(
            OrcaLoadReport::from_trailers(&trailers(&[one, one])),
            Err(OrcaError::MultipleReports)
        );
        assert_eq!(
            OrcaLoadReport::from_trailers(&trailers(&["CQAAAAAAAOA/,CQAAAAAAAOA/"])),
            Err(OrcaError::MultipleReports)
        );
    }

    #[test]
    fn malformed_values_are_typed_errors() {
        let error = OrcaLoadReport::from_trailers(&trailers(&["a*b"])).unwrap_err();
        assert!(matches!(error, OrcaError::NotBase64 { .. }), "{error:?}");
        assert!(error
            .to_string()
            .starts_with("endpoint-load-metrics-bin is not base64"));

        // 0x0f: field 1 with wire type 7, which does not exist.
        let error = OrcaLoadReport::from_trailers(&trailers(&["Dw"])).unwrap_err();
        assert!(matches!(error, OrcaError::NotALoadReport(_)), "{error:?}");
        assert!(std::error::Error::source(&error).is_some());

        // A length-delimited map entry that runs past the end.
        let error =
            OrcaLoadReport::from_header_value(&HeaderValue::from_static("Igo")).unwrap_err();
        assert!(matches!(error, OrcaError::NotALoadReport(_)), "{error:?}");
    }

    #[test]
    fn large_reports_decode_through_the_heap() {
        let report = OrcaLoadReport {
            named_metrics: (0..100)
                .map(|i| (format!("metric-{i}"), f64::from(i)))
                .collect(),
            ..Default::default()
        };
        let value = report.to_header_value();
        assert!(value.len() > STACK_BUFFER * 2);
        assert_eq!(OrcaLoadReport::from_header_value(&value), Ok(report));
    }

    #[test]
    fn the_deprecated_integer_rps_is_skipped() {
        #[allow(deprecated)]
        let old = proto::OrcaLoadReport {
            rps: 10,
            cpu_utilization: 0.1,
            ..Default::default()
        };
        let report = OrcaLoadReport::decode(&old.encode_to_vec()).unwrap();
        assert_eq!(report.cpu_utilization, 0.1);
        assert_eq!(report.rps_fractional, 0.0);
    }

    #[test]
    fn is_empty_sees_every_field() {
        assert!(OrcaLoadReport::default().is_empty());
        assert!(!full_report().is_empty());
        let only_eps = OrcaLoadReport {
            eps: 1.0,
            ..Default::default()
        };
        assert!(!only_eps.is_empty());
    }
}
