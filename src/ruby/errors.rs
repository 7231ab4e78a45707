//! The one place where core errors become Ruby exceptions. The classes are
//! defined in `lib/approval_sync/errors.rb`, which loads before this library.

use magnus::value::Lazy;
use magnus::{prelude::*, ExceptionClass, RModule, Ruby};

use crate::error::Error as CoreError;

fn class(ruby: &Ruby, name: &str) -> ExceptionClass {
    // UNWRAP: lib/approval_sync/errors.rb defines these before the library loads;
    // init() checks every one of them, so a missing class fails at require time.
    ruby.class_object()
        .const_get::<_, RModule>("ApprovalSync")
        .and_then(|m| m.const_get::<_, ExceptionClass>(name))
        .unwrap()
}

static CONNECTION: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "ConnectionError"));
static TIMEOUT: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "TimeoutError"));
static WRONG_TYPE: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "WrongTypeError"));
static PROTOCOL: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "ProtocolError"));
static CONFIG: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "ConfigurationError"));
static INTERRUPTED: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "InterruptedError"));
static INTERNAL: Lazy<ExceptionClass> = Lazy::new(|r| class(r, "InternalError"));

/// Fails `require` early when the Ruby side did not define the classes.
pub fn init(ruby: &Ruby) -> Result<(), magnus::Error> {
    let top = ruby
        .class_object()
        .const_get::<_, RModule>("ApprovalSync")?;
    for name in [
        "ConnectionError",
        "TimeoutError",
        "WrongTypeError",
        "ProtocolError",
        "ConfigurationError",
        "InterruptedError",
        "InternalError",
    ] {
        top.const_get::<_, ExceptionClass>(name)?;
    }
    Ok(())
}

/// Turns a core error into the matching Ruby exception.
pub fn to_ruby(ruby: &Ruby, err: CoreError) -> magnus::Error {
    let message = err.to_string();
    let class = match &err {
        CoreError::InvalidArgument(_) => ruby.exception_arg_error(),
        CoreError::Config(_) => ruby.get_inner(&CONFIG),
        CoreError::Timeout(_) => ruby.get_inner(&TIMEOUT),
        CoreError::Connection(_) => ruby.get_inner(&CONNECTION),
        CoreError::WrongType { key, .. } => {
            let class = ruby.get_inner(&WRONG_TYPE);
            // The key travels as an attribute so callers need not parse messages.
            return match class.new_instance((message, key.clone())) {
                Ok(exception) => magnus::Error::from(exception),
                Err(e) => e,
            };
        }
        CoreError::Protocol(_) => ruby.get_inner(&PROTOCOL),
        CoreError::Interrupted => ruby.get_inner(&INTERRUPTED),
        CoreError::Panic(_) => ruby.get_inner(&INTERNAL),
    };
    magnus::Error::new(class, message)
}
