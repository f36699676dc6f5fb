//! What starts a function: [`http`] (a request to `/fn/{appId}/{name}/...`)
//! and [`cron`] (the functions' schedules, through [`crate::scheduler`]).
//! Both build a typed [`crate::invoke::Trigger`], let [`headers`] turn it
//! into the `x-runtime-*` headers the guest sees, and run the function
//! through the one invocation path, [`crate::invoke`].

pub mod cron;
pub mod headers;
pub mod http;
