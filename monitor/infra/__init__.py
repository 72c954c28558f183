"""What the commands and the workers share to reach the outside: the Kafka connection, topic chores,
and who may read the web port."""
