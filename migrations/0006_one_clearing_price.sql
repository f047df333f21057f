-- One place holds a pool's current clearing price: its latest market_rounds row. The
-- scheduling leader writes a round's rows in the same transaction as the round's
-- decisions, so outbid reasons (which quote that row when read) and the dashboards agree.
-- clearing_prices (0004) held the same figure, written separately; it goes.

DROP TABLE clearing_prices;
