//! The `gmail` channel: the email channel with Gmail's SMTP server, STARTTLS on
//! 587 and AUTH. Google needs an app password (not the account's own) since it
//! stopped "less secure apps" (Inspeqtor #107).

use std::collections::BTreeMap;

use super::{ConfigError, Params, email::Email};

const SERVER: &str = "smtp.gmail.com";

pub fn from_params(route: &str, map: &BTreeMap<String, String>, hostname: &str) -> Result<Email, ConfigError> {
    let known: Vec<&str> = super::email::PARAMS.iter().copied().filter(|k| *k != "smtp_server").collect();
    let p = Params::new(route, "gmail", map, &known)?;
    p.require("username")?;
    p.require("password")?;
    Email::build(&p, SERVER, hostname)
}
