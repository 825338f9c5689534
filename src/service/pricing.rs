//! Price table operations. An edit is stored first, then swapped in for later requests.

use super::Service;
use crate::error::HttpError;
use crate::pricing::{PriceEntry, PricingTable};
use crate::store;

impl Service {
    pub fn pricing_table(&self) -> PricingTable {
        self.prices().table()
    }

    pub async fn put_price(&self, entry: PriceEntry) -> Result<PriceEntry, HttpError> {
        let (entry, price) = entry.validate()?;
        let stored = entry.clone();
        self.store
            .writer
            .run(move |tx| store::pricing::upsert(tx, &stored))
            .await?;
        let book = self.prices().with(entry.clone(), price);
        self.set_prices(book);
        self.events.emit(crate::events::CoreEvent::PricingChanged {
            model: entry.model.clone(),
        });
        Ok(entry)
    }
}
