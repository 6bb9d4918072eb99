//! The one mapping from domain errors to gRPC status codes.

use crate::accounts::AccountError;
use crate::coord::CoordError;
use crate::delivery::DeliveryError;
use crate::store::StoreError;
use tonic::Status;

pub fn store(e: StoreError) -> Status {
    match e {
        StoreError::NotFound => Status::not_found("not found"),
        StoreError::Invalid(msg) => Status::invalid_argument(msg),
        e if e.is_temporary() => Status::unavailable(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

pub fn account(e: AccountError) -> Status {
    match e {
        AccountError::InvalidName(e) => Status::invalid_argument(e.to_string()),
        AccountError::InvalidPassword(why) => Status::invalid_argument(format!("invalid password: {why}")),
        AccountError::AlreadyExists(name) => Status::already_exists(format!("account {name} already exists")),
        AccountError::NotFound(name) => Status::not_found(format!("account {name} does not exist")),
        e @ (AccountError::InUse(_) | AccountError::Interrupted(_)) => Status::aborted(e.to_string()),
        e @ AccountError::BeingDeleted(_) => Status::failed_precondition(e.to_string()),
        AccountError::Lock(e) => coord(e),
        AccountError::Store(e) => store(e),
    }
}

pub fn delivery(e: DeliveryError) -> Status {
    match e {
        DeliveryError::TooLarge(_) | DeliveryError::SpoolFull => Status::resource_exhausted(e.to_string()),
        DeliveryError::Empty | DeliveryError::Malformed(_) => Status::invalid_argument(e.to_string()),
        DeliveryError::Read(_) => Status::cancelled(e.to_string()),
        DeliveryError::Spool(_) => Status::unavailable(e.to_string()),
    }
}

/// Every coordination failure: the pool's Redis (or the process's tables) did not answer.
pub fn coord(e: CoordError) -> Status {
    match e {
        CoordError::Unavailable(_) => Status::unavailable(e.to_string()),
    }
}
