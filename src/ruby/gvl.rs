//! Runs core calls with the GVL released, so other Ruby threads run while one
//! waits on Redis, and so `Timeout` and `Thread#kill` can interrupt it.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use magnus::Ruby;

use crate::conn::Cancel;
use crate::error::{Error, Result};

struct Call<F, T> {
    func: Option<F>,
    cancel: Arc<Cancel>,
    result: Option<Result<T>>,
}

unsafe extern "C" fn run<F, T>(data: *mut c_void) -> *mut c_void
where
    F: FnOnce(&Cancel) -> Result<T>,
{
    // SAFETY: `data` is the `Call` that `without_gvl` owns and keeps alive for
    // the whole of rb_thread_call_without_gvl; only this function touches it.
    let call = unsafe { &mut *(data as *mut Call<F, T>) };
    let cancel = call.cancel.clone();
    let outcome = match call.func.take() {
        Some(func) => catch_unwind(AssertUnwindSafe(|| func(&cancel))),
        None => Ok(Err(Error::Panic("call ran twice".into()))),
    };
    call.result = Some(outcome.unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Err(Error::Panic(text))
    }));
    std::ptr::null_mut()
}

unsafe extern "C" fn unblock(data: *mut c_void) {
    // SAFETY: `data` points into the `Arc<Cancel>` held by the `Call`, alive
    // until rb_nogvl returns; Cancel is Sync, and cancel() only stores an
    // atomic, so this is safe in a signal handler too.
    let cancel = unsafe { &*(data as *const Cancel) };
    cancel.cancel();
}

/// Runs `func` without the GVL. A panic inside becomes `Error::Panic`; an
/// interrupt from Ruby cancels the call, after which Ruby's pending interrupt
/// (a Timeout error, a kill) is raised once the GVL is back.
pub fn without_gvl<F, T>(ruby: &Ruby, func: F) -> std::result::Result<T, magnus::Error>
where
    F: FnOnce(&Cancel) -> Result<T> + Send,
    T: Send,
{
    let cancel = Arc::new(Cancel::new());
    let mut call = Call {
        func: Some(func),
        cancel: cancel.clone(),
        result: None,
    };
    loop {
        // SAFETY: both pointers outlive the call; `run` catches every panic,
        // so nothing unwinds through the C frames of the VM. INTR_FAIL never
        // raises by itself: with an interrupt flag set it returns without
        // calling `run`, and it does not check interrupts afterwards, so Ruby
        // cannot jump over these frames and lose the call's result.
        // UBF_ASYNC_SAFE is true of `unblock` (it only stores an atomic) and
        // spares a single-threaded process a helper thread on every call.
        unsafe {
            rb_sys::rb_nogvl(
                Some(run::<F, T>),
                &mut call as *mut Call<F, T> as *mut c_void,
                Some(unblock),
                Arc::as_ptr(&cancel) as *mut c_void,
                (rb_sys::RB_NOGVL_INTR_FAIL | rb_sys::RB_NOGVL_UBF_ASYNC_SAFE) as i32,
            );
        }
        // A call that completed is never reported as failed, even when an
        // interrupt came in just after; Ruby raises that one at its next check.
        if matches!(call.result, Some(Ok(_))) || (call.result.is_some() && !cancel.is_cancelled()) {
            break;
        }
        // Interrupted, or not started because an interrupt flag was set (a
        // Timeout, a kill, but also the scheduler's timer): let Ruby handle
        // it, raising here when it is an exception or a kill.
        // SAFETY: called with the GVL held; protect catches the jump.
        magnus::rb_sys::protect(|| unsafe {
            rb_sys::rb_thread_check_ints();
            rb_sys::Qnil as rb_sys::VALUE
        })?;
        if call.result.is_some() || cancel.is_cancelled() {
            // Cancelled, yet nothing was raised (Thread#wakeup, a trap):
            // the call's reply is gone, so report it rather than retry.
            let err = match call.result.take() {
                Some(Err(err)) if !matches!(err, Error::Interrupted) => err,
                _ => Error::Interrupted,
            };
            return Err(super::errors::to_ruby(ruby, err));
        }
        // Only the timer or a signal handler was pending; `run` has not
        // started, so running it now is the first and only attempt.
    }
    match call.result {
        Some(Ok(value)) => Ok(value),
        Some(Err(err)) => Err(super::errors::to_ruby(ruby, err)),
        None => Err(super::errors::to_ruby(
            ruby,
            Error::Panic("call did not run".into()),
        )),
    }
}
