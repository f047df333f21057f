-- One place holds a pool's current clearing price: its latest market_rounds row (the one
-- with the highest id: ids follow insertion, where the leaders' clocks may disagree). The
-- scheduling leader now writes a round's market_rounds rows in the same transaction as the
-- round's decisions, so outbid reasons (which quote that row when read) and the dashboards
-- agree. Before, the leader wrote clearing_prices with the decisions and market_rounds in
-- a transaction of its own, and the two could disagree for a moment.
--
-- clearing_prices (0004) is no longer written or read. It stays for now so that replicas
-- of the previous release keep serving during a rolling upgrade (they read a price that no
-- longer moves); a later migration drops it.

CREATE INDEX market_rounds_model_id ON market_rounds (gpu_model, id);
