"""Tests of the AMQP client, tower_trio.amqp."""
