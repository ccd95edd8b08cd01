//! [`ResponseFuture`]: waits for the store when it must, then for the inner
//! service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::AuthBody;
use crate::limit::fields::LimitFields;
use crate::response::{Answers, ResponseContext};
use crate::verify::{Admission, PendingVerdict, admit};

pin_project! {
    /// The response future of [`KeyAuth`](crate::KeyAuth).
    pub struct ResponseFuture<Svc, ReqBody>
    where
        Svc: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<Svc, ReqBody>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<Svc, ReqBody>
    where
        Svc: Service<Request<ReqBody>>,
    {
        /// The store is being asked. Boxed: this state is rare and large, and
        /// the future is moved on every request.
        Checking {
            waiting: Box<Waiting<Svc, ReqBody>>,
        },
        /// The request passed; the inner service answers. A key layer
        /// gives a refusal a handler answered itself its challenge.
        Calling {
            #[pin]
            future: Svc::Future,
            answers: Option<Answers>,
            limit_fields: Option<LimitFields>,
        },
        /// The request was refused without calling the inner service.
        Refused {
            response: Option<Response<Bytes>>,
        },
    }
}

/// What the future holds while the store is asked.
struct Waiting<Svc, ReqBody> {
    verdict: PendingVerdict,
    request: Option<(Parts, ReqBody)>,
    inner: Option<Svc>,
    public: bool,
    answers: Answers,
    context: Arc<ResponseContext>,
}

impl<Svc, ReqBody> ResponseFuture<Svc, ReqBody>
where
    Svc: Service<Request<ReqBody>>,
{
    pub(crate) fn calling(
        future: Svc::Future,
        answers: Option<Answers>,
        limit_fields: Option<LimitFields>,
    ) -> Self {
        Self {
            state: State::Calling {
                future,
                answers,
                limit_fields,
            },
        }
    }

    pub(crate) fn refused(response: Response<Bytes>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }

    pub(crate) fn checking(
        verdict: PendingVerdict,
        parts: Parts,
        body: ReqBody,
        inner: Svc,
        public: bool,
        answers: Answers,
        context: Arc<ResponseContext>,
    ) -> Self {
        Self {
            state: State::Checking {
                waiting: Box::new(Waiting {
                    verdict,
                    request: Some((parts, body)),
                    inner: Some(inner),
                    public,
                    answers,
                    context,
                }),
            },
        }
    }
}

impl<Svc, ReqBody, ResBody> Future for ResponseFuture<Svc, ReqBody>
where
    Svc: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<AuthBody<ResBody>>, Svc::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProjection::Checking { waiting } => {
                    let verdict = ready!(waiting.verdict.as_mut().poll(cx));
                    let (parts, body) = waiting.request.take().expect("polled after completion");
                    match admit(
                        verdict,
                        waiting.public,
                        &waiting.answers,
                        &waiting.context,
                        parts,
                    ) {
                        Admission::Pass(parts, limit_fields) => {
                            let mut inner = waiting.inner.take().expect("polled after completion");
                            let future = inner.call(Request::from_parts(parts, body));
                            let answers = Some(waiting.answers.clone());
                            this.state.set(State::Calling {
                                future,
                                answers,
                                limit_fields,
                            });
                        }
                        Admission::Refuse(refusal) => {
                            return Poll::Ready(Ok(refusal.map(AuthBody::refusal)));
                        }
                    }
                }
                StateProjection::Calling {
                    future,
                    answers,
                    limit_fields,
                } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(answers) = answers {
                        answers.restamp(&mut response);
                    }
                    if let Some(fields) = limit_fields.take() {
                        fields.stamp(&mut response);
                    }
                    return Poll::Ready(Ok(response.map(AuthBody::inner)));
                }
                StateProjection::Refused { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(AuthBody::refusal)));
                }
            }
        }
    }
}

impl<Svc, ReqBody> std::fmt::Debug for ResponseFuture<Svc, ReqBody>
where
    Svc: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
