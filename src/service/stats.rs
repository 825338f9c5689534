//! Spend statistics and settings.

use super::Service;
use crate::budget::period::{self, Period, Zone};
use crate::config::BASE_PATH;
use crate::dto::{Settings, Stats};
use crate::error::HttpError;
use crate::store;
use chrono::Utc;

impl Service {
    pub async fn stats(&self) -> Result<Stats, HttpError> {
        let now = Utc::now();
        let zone = self.config.zone;
        let today = zone.day(now);
        let month = zone.day(period::window(Period::Monthly, now, now, zone).start);
        Ok(self
            .store
            .read(move |c| store::stats::stats(c, today, month))
            .await?)
    }

    pub fn settings(&self, port: u16) -> Settings {
        let host = match self.config.host {
            h if h.is_unspecified() || h.is_loopback() => "localhost".to_string(),
            std::net::IpAddr::V6(h) => format!("[{h}]"),
            h => h.to_string(),
        };
        Settings {
            webhook_secret: self.webhook_secret.clone(),
            retention_days: self.config.retention_days,
            proxy_url: format!("http://{host}:{port}{BASE_PATH}"),
            require_budget: self.config.require_budget,
            time_zone: match zone_name(self.config.zone) {
                Some(n) => n,
                None => "local".into(),
            },
        }
    }
}

fn zone_name(z: Zone) -> Option<String> {
    match z {
        Zone::Local => None,
        Zone::Named(tz) => Some(tz.name().to_string()),
    }
}
