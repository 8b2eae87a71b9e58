//! `.await` on an [`ObjectRef`].

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::error::Result;
use crate::object::{downcast, Held, ObjectRef, Value, Waiter};
use crate::runtime;

/// The future of an [`ObjectRef`]: resolves to the value (cloned out of the store) or
/// the object's error.
///
/// ```
/// # prism::init().unwrap();
/// let r = prism::put(5u8);
/// let v = prism::block_on(async { r.await });
/// assert_eq!(v.unwrap(), 5);
/// # prism::shutdown();
/// ```
pub struct ObjectFuture<T> {
    target: ObjectRef<T>,
    waiting: Option<Waker>,
}

impl<T: Value + Clone> Future for ObjectFuture<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let store = match self.target.count.store() {
            Ok(s) => s.clone(),
            Err(e) => return Poll::Ready(Err(e)),
        };
        let id = self.target.id();
        let same_waker = self
            .waiting
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        let waiter = (!same_waker).then(|| Waiter::Waker(cx.waker().clone()));
        match store.poll(id, waiter) {
            Some(Ok(held)) => {
                let value = match held {
                    Held::Here(v) => Ok(v),
                    // Fetching blocks this thread, as a `get` would.
                    elsewhere => runtime::current().and_then(|rt| rt.value(id, elsewhere)),
                };
                Poll::Ready(
                    value
                        .and_then(|v| downcast::<T>(id, v))
                        .map(|a| (*a).clone()),
                )
            }
            Some(Err(e)) => Poll::Ready(Err(e)),
            None => {
                if !same_waker {
                    self.waiting = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl<T: Value + Clone> IntoFuture for ObjectRef<T> {
    type Output = Result<T>;
    type IntoFuture = ObjectFuture<T>;

    fn into_future(self) -> ObjectFuture<T> {
        ObjectFuture {
            target: self,
            waiting: None,
        }
    }
}
