-- Before 0.1's round-two hardening an absurd usage from the upstream could overflow a
-- roll-up's `+`, which SQLite stores as a REAL; reading it back then failed at start-up
-- (`Invalid column type Real`). Such values become the nearest integer (CAST saturates at
-- the i64 bounds); the roll-ups now add with the saturating `sadd` (src/store/sums.rs).
UPDATE daily SET
    requests = CAST(requests AS INTEGER), blocked = CAST(blocked AS INTEGER),
    input_tokens = CAST(input_tokens AS INTEGER), cache_write_tokens = CAST(cache_write_tokens AS INTEGER),
    cache_read_tokens = CAST(cache_read_tokens AS INTEGER), output_tokens = CAST(output_tokens AS INTEGER),
    web_search_requests = CAST(web_search_requests AS INTEGER), dollars = CAST(dollars AS INTEGER)
WHERE typeof(requests) = 'real' OR typeof(blocked) = 'real' OR typeof(input_tokens) = 'real'
   OR typeof(cache_write_tokens) = 'real' OR typeof(cache_read_tokens) = 'real'
   OR typeof(output_tokens) = 'real' OR typeof(web_search_requests) = 'real' OR typeof(dollars) = 'real';
UPDATE sessions SET
    requests = CAST(requests AS INTEGER), blocked = CAST(blocked AS INTEGER),
    tokens = CAST(tokens AS INTEGER), dollars = CAST(dollars AS INTEGER)
WHERE typeof(requests) = 'real' OR typeof(blocked) = 'real' OR typeof(tokens) = 'real' OR typeof(dollars) = 'real';
