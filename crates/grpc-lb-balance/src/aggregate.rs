use grpc_lb_core::ConnectivityState;

/// The channel state for a set of subchannel states, by grpc-go's rule
/// (`balancer/conn_state_evaluator.go`, endpointsharding): any READY → READY;
/// else any CONNECTING → CONNECTING; else any IDLE → IDLE; else
/// TRANSIENT_FAILURE, which is also the answer for no subchannels at all.
///
/// # Examples
///
/// ```
/// use grpc_lb_balance::aggregate;
/// use grpc_lb_core::ConnectivityState::*;
///
/// assert_eq!(aggregate([TransientFailure, Connecting, Idle]), Connecting);
/// assert_eq!(aggregate([]), TransientFailure);
/// ```
pub fn aggregate(states: impl IntoIterator<Item = ConnectivityState>) -> ConnectivityState {
    let (mut connecting, mut idle) = (false, false);
    for state in states {
        match state {
            ConnectivityState::Ready => return ConnectivityState::Ready,
            ConnectivityState::Connecting => connecting = true,
            ConnectivityState::Idle => idle = true,
            ConnectivityState::TransientFailure | ConnectivityState::Shutdown => {}
        }
    }
    if connecting {
        ConnectivityState::Connecting
    } else if idle {
        ConnectivityState::Idle
    } else {
        ConnectivityState::TransientFailure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectivityState::*;

    #[test]
    fn ready_wins_then_connecting_then_idle() {
        assert_eq!(aggregate([TransientFailure, Ready, Idle]), Ready);
        assert_eq!(aggregate([Idle, Connecting, TransientFailure]), Connecting);
        assert_eq!(aggregate([Idle, TransientFailure]), Idle);
        assert_eq!(aggregate([TransientFailure, Shutdown]), TransientFailure);
        assert_eq!(aggregate([]), TransientFailure);
    }
}
