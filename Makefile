# Developer tasks. Variables such as KAFKA_PORT, KAFKA_HOME_DIR or KAFKA_WIPE=1 can be
# given on the command line, e.g. `make kafka-down KAFKA_WIPE=1`.

.PHONY: kafka-up kafka-down

## Start a local single-node Kafka broker (KRaft, no Docker); prints the bootstrap address.
kafka-up:
	@bash scripts/kafka-up.sh

## Stop the local broker (KAFKA_WIPE=1 also deletes its data dir).
kafka-down:
	@bash scripts/kafka-down.sh
