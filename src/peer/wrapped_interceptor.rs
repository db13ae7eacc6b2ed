//! roomcam's interceptors wrap one of webrtc-rs' and change one thing about
//! it (which streams it is bound to, what it lets out). Everything else is
//! handed to the wrapped one; this macro writes that part once.

/// Implements `Protocol` for `$wrapper<I>` (a struct with an `inner: I`
/// field, `I: Interceptor`) by delegating every call to `inner`, except
/// `poll_write` when a body is given: `poll_write(this) { … }`, with `this`
/// bound to `&mut self`.
macro_rules! delegate_protocol_to_inner {
    ($wrapper:ident) => {
        $crate::peer::wrapped_interceptor::delegate_protocol_to_inner!($wrapper, poll_write(this) {
            this.inner.poll_write()
        });
    };
    ($wrapper:ident, poll_write($this:ident) $poll_write:block) => {
        impl<I: ::rtc::interceptor::Interceptor>
            ::rtc::sansio::Protocol<::rtc::interceptor::TaggedPacket, ::rtc::interceptor::TaggedPacket, ()>
            for $wrapper<I>
        {
            type Rout = ::rtc::interceptor::TaggedPacket;
            type Wout = ::rtc::interceptor::TaggedPacket;
            type Eout = ();
            type Error = ::rtc::shared::error::Error;
            type Time = ::std::time::Instant;

            fn handle_read(&mut self, msg: ::rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
                self.inner.handle_read(msg)
            }
            fn poll_read(&mut self) -> Option<::rtc::interceptor::TaggedPacket> {
                self.inner.poll_read()
            }
            fn handle_write(&mut self, msg: ::rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
                self.inner.handle_write(msg)
            }
            fn poll_write(&mut self) -> Option<::rtc::interceptor::TaggedPacket> {
                let $this = self;
                $poll_write
            }
            fn handle_event(&mut self, event: ()) -> Result<(), Self::Error> {
                self.inner.handle_event(event)
            }
            fn poll_event(&mut self) -> Option<()> {
                self.inner.poll_event()
            }
            fn handle_timeout(&mut self, now: ::std::time::Instant) -> Result<(), Self::Error> {
                self.inner.handle_timeout(now)
            }
            fn poll_timeout(&mut self) -> Option<::std::time::Instant> {
                self.inner.poll_timeout()
            }
            fn close(&mut self) -> Result<(), Self::Error> {
                self.inner.close()
            }
        }
    };
}

/// Inside `impl Interceptor for …`: the remote streams' binds, handed to
/// `inner` as they are.
macro_rules! delegate_remote_streams_to_inner {
    () => {
        fn bind_remote_stream(&mut self, info: &::rtc::interceptor::StreamInfo) {
            self.inner.bind_remote_stream(info);
        }
        fn unbind_remote_stream(&mut self, info: &::rtc::interceptor::StreamInfo) {
            self.inner.unbind_remote_stream(info);
        }
    };
}

pub(crate) use {delegate_protocol_to_inner, delegate_remote_streams_to_inner};
