//! What a lost or refused connection says: whose fault it may be (which
//! decides whether the rows in flight get a strike), whether an incoming
//! command was too large, and how to tell a technician.

use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError};

/// Whether a lost connection may be the fault of a message this agent
/// sent (the broker closing on it, the client refusing to send it): only
/// then do the rows in flight get a strike. A timeout, a refused login or an
/// incoming packet the client cannot read says nothing about them.
pub(super) fn implicates_outgoing(e: &ConnectionError) -> bool {
    use rumqttc::StateError;
    matches!(
        e,
        ConnectionError::Io(_)
            | ConnectionError::MqttState(StateError::Io(_))
            | ConnectionError::MqttState(StateError::ConnectionAborted)
            | ConnectionError::MqttState(StateError::Deserialization(rumqttc::Error::OutgoingPacketTooLarge { .. }))
    )
}

/// An incoming packet over the client's limit (rumqttc closes the
/// connection on it).
pub(super) fn incoming_too_large(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::MqttState(rumqttc::StateError::Deserialization(rumqttc::Error::PayloadSizeLimitExceeded(_)))
    )
}

/// How long commands wait after an oversize incoming message first dropped
/// the connection, and at most after it kept doing so.
pub(super) const COMMANDS_BACKOFF_MIN: Duration = Duration::from_secs(30);
pub(super) const COMMANDS_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// A connection error in words a technician can act on.
pub(super) fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => {
                "the broker refused the connection: bad username or password (check broker.username and broker.password_file)".into()
            }
            ConnectReturnCode::NotAuthorized => {
                "the broker refused the connection: not authorised (check broker.username, the password and the broker's ACL)".into()
            }
            other => format!("the broker refused the connection: {other:?}"),
        },
        ConnectionError::Tls(t) => format!("TLS: {t} (check broker.ca_file, broker.client_cert and broker.client_key)"),
        other => other.to_string(),
    }
}
