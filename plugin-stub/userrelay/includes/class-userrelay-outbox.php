<?php
/**
 * The outbox: every reported event is first a row in {prefix}userrelay_outbox, then sent.
 *
 * A user's request only INSERTs (one multi-row INSERT at shutdown) and, if the head of the outbox
 * is due and nobody is flushing, sends after its answer: under PHP-FPM from the same worker after
 * fastcgi_finish_request() (the visitor already has the answer), elsewhere through one
 * non-blocking loopback request to the flush route, at most one in flight at a time (a claim
 * row in the options table). A flush sends what is due, up to 100 events per signed POST, deletes
 * rows only once the relay answered 202, and returns: it never waits for more rows, and it stops
 * taking batches after a short budget. Rows stored while it runs are sent by whoever finds them
 * due next: the flusher itself when it looks again after releasing its lock, or the next
 * request. A failure defers the head with backoff (retried by a later request or WP-Cron, or at
 * once when the relay nudges), so nothing is lost and per-user order is kept. One flusher at a
 * time (a MySQL named lock, per database and table prefix).
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Stores and sends reported events.
 */
final class UserRelay_Outbox {

	/** Most rows in one INSERT. */
	const INSERT_ROWS = 200;

	/** Most events in one POST (the relay takes up to 1,000). */
	const BATCH_EVENTS = 100;

	/** Largest body we send; the relay refuses bodies over 1 MiB (ingest.max_body_bytes). */
	const MAX_BODY_BYTES = 1000000;

	/** Largest single event; above it the event's meta is left out (and the error logged). */
	const MAX_EVENT_BYTES = 900000;

	/** Waits after the 1st, 2nd, ... failed attempt; the last one repeats. */
	const BACKOFF = array( 10, 30, 120, 600, 1800, 3600 );

	/** Seconds a flush from WP-Cron or the settings page may run before it stops taking batches. */
	const FLUSH_BUDGET = 25;

	/**
	 * Seconds a flush after a request (FPM's finished request, the loopback flush route) may run
	 * before it stops taking batches: it holds a PHP worker of the site, so it stays short; what
	 * is left is due, and the next request's end sends it.
	 */
	const BACKGROUND_BUDGET = 2;

	/** Seconds after which a loopback kick that never ran (a lost request) no longer blocks one. */
	const KICK_STALE = 10;

	/** The option naming when the loopback flush in flight was started (0: none). */
	const OPTION_KICK = 'userrelay_kick_at';

	/** Options this class owns. */
	const OPTION_INSTALL_ID  = 'userrelay_install_id';
	const OPTION_FLUSH_TOKEN = 'userrelay_flush_token';
	const OPTION_STATUS      = 'userrelay_status';

	/**
	 * Relay client.
	 *
	 * @var UserRelay_Relay_Client
	 */
	private $client;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Relay_Client $client Relay client.
	 */
	public function __construct( UserRelay_Relay_Client $client ) {
		$this->client = $client;
	}

	/**
	 * The outbox table.
	 */
	public static function table(): string {
		global $wpdb;
		return $wpdb->prefix . 'userrelay_outbox';
	}

	/**
	 * Stores events (each ['user_id' => int, 'payload' => array without 'id']) in one INSERT.
	 *
	 * @param array[] $events In the order they happened.
	 * @return int Rows stored.
	 */
	public function enqueue( array $events ): int {
		global $wpdb;
		$now    = time();
		$values = array();
		foreach ( $events as $event ) {
			$payload = UserRelay_Developer_Hooks::outgoing( $event['payload'], (int) $event['user_id'] );
			$json    = null === $payload ? null : $this->encode( $payload );
			if ( null !== $json ) {
				$values[] = $wpdb->prepare( "('', %d, %s, %d, 0, 0)", $event['user_id'], $json, $now );
			}
		}
		$table  = self::table();
		$stored = 0;
		// Usually one statement; a long import run in one process stays under max_allowed_packet.
		foreach ( array_chunk( $values, self::INSERT_ROWS ) as $chunk ) {
			$rows = $wpdb->query( "INSERT INTO {$table} (event_id, user_id, payload, created_at, attempts, next_attempt_at) VALUES " . implode( ',', $chunk ) ); // Each tuple is prepared above.
			if ( false === $rows ) {
				// Only a database refusing the rows can lose events: say so loudly, once.
				error_log( 'UserRelay: could not store ' . count( $chunk ) . ' event(s) in the outbox: ' . $wpdb->last_error );
				continue;
			}
			$stored += $rows; // Their event ids follow from their row ids (event_id()).
		}
		return $stored;
	}

	/**
	 * An outbox row's event id: this install's id plus its row id, unique for ever and the same
	 * on every resend (as the batch's webhook-id is). Rows stored by earlier builds of the
	 * plugin have it in their event_id column.
	 *
	 * @param object $row A row with id and event_id.
	 */
	public static function event_id( $row ): string {
		return '' !== (string) $row->event_id ? (string) $row->event_id : self::install_id() . '-' . $row->id;
	}

	/**
	 * At the end of a request: send if the head of the outbox is due and nobody is flushing.
	 * One indexed query when there is nothing to do; the visitor never waits for the send.
	 */
	public function maybe_kick(): void {
		global $wpdb;
		$table = self::table();
		$head  = $wpdb->get_row( $wpdb->prepare( "SELECT next_attempt_at, IS_FREE_LOCK(%s) AS free FROM {$table} ORDER BY id LIMIT 1", self::lock_name() ) );
		if ( null === $head || (int) $head->next_attempt_at > time() || '1' !== (string) $head->free ) {
			return; // Empty, waiting out a backoff, or a flusher runs (it looks again when done).
		}
		if ( function_exists( 'fastcgi_finish_request' ) && 'fpm-fcgi' === PHP_SAPI ) {
			// The response is complete for the client; this PHP worker sends, briefly.
			fastcgi_finish_request();
			$this->flush( self::BACKGROUND_BUDGET );
			return;
		}
		if ( $this->claim_kick() ) {
			( new UserRelay_Loopback_Kick( $this ) )->send();
		}
	}

	/**
	 * Takes the right to start the one loopback flush in flight: an atomic upsert of the claim
	 * option that succeeds when there is none or it is stale. Released by the flush route.
	 */
	public function claim_kick(): bool {
		global $wpdb;
		$now = microtime( true );
		// Affected rows: 1 inserted, 2 updated (stale claim taken), 0 left alone (a kick runs).
		$rows = $wpdb->query( $wpdb->prepare( "INSERT INTO {$wpdb->options} (option_name, option_value, autoload) VALUES (%s, %s, 'no') ON DUPLICATE KEY UPDATE option_value = IF(CAST(option_value AS DECIMAL(20,6)) < %f, VALUES(option_value), option_value)", self::OPTION_KICK, sprintf( '%.6f', $now ), $now - self::KICK_STALE ) );
		return is_int( $rows ) && $rows > 0;
	}

	/**
	 * The loopback flush ended: the next request that finds rows due may kick one again.
	 */
	public function release_kick(): void {
		global $wpdb;
		$wpdb->query( $wpdb->prepare( "UPDATE {$wpdb->options} SET option_value = '0' WHERE option_name = %s", self::OPTION_KICK ) );
	}

	/**
	 * Sends due rows until the outbox is empty, the head is deferred, or the budget is spent;
	 * then returns. It never waits for rows to come.
	 *
	 * @param int $budget Seconds after which no new batch starts.
	 * @return array{sent: int, remaining: int, busy: bool}
	 */
	public function flush( int $budget = self::FLUSH_BUDGET ): array {
		global $wpdb;
		$deadline = microtime( true ) + $budget;
		$sent     = 0;
		$busy     = false;
		$lock     = self::lock_name();
		do {
			if ( '1' !== (string) $wpdb->get_var( $wpdb->prepare( 'SELECT GET_LOCK(%s, 0)', $lock ) ) ) {
				$busy = true; // Another flusher runs; it looks again after releasing the lock.
				break;
			}
			try {
				$sent += $this->drain( $deadline );
			} finally {
				$wpdb->query( $wpdb->prepare( 'SELECT RELEASE_LOCK(%s)', $lock ) );
			}
			// A request that stored rows while we held the lock found it taken and left them to us.
			$due = $this->head_due_at();
		} while ( microtime( true ) < $deadline && null !== $due && $due <= time() );
		return array(
			'sent'      => $sent,
			'remaining' => $this->count(),
			'busy'      => $busy,
		);
	}

	/**
	 * Makes the head due now (after the admin fixed the settings, or asked to send now).
	 */
	public function retry_now(): void {
		global $wpdb;
		$table = self::table();
		$wpdb->query( "UPDATE {$table} SET next_attempt_at = 0 ORDER BY id LIMIT 1" );
	}

	/**
	 * Rows waiting to be sent.
	 */
	public function count(): int {
		global $wpdb;
		$table = self::table();
		return (int) $wpdb->get_var( "SELECT COUNT(*) FROM {$table}" );
	}

	/**
	 * The head row (without its payload), or null when the outbox is empty.
	 */
	public function head(): ?object {
		global $wpdb;
		$table = self::table();
		return $wpdb->get_row( "SELECT id, event_id, user_id, created_at, attempts, next_attempt_at, last_error FROM {$table} ORDER BY id LIMIT 1" );
	}

	/**
	 * The last outcomes, for the settings page.
	 *
	 * @return array<string, mixed>
	 */
	public static function status(): array {
		$status = get_option( self::OPTION_STATUS, array() );
		return is_array( $status ) ? $status : array();
	}

	/**
	 * This install's random id, the prefix of every event id; made once.
	 */
	public static function install_id(): string {
		$id = (string) get_option( self::OPTION_INSTALL_ID, '' );
		if ( '' === $id ) {
			$id = strtolower( wp_generate_password( 12, false ) );
			add_option( self::OPTION_INSTALL_ID, $id, '', 'yes' );
			$id = (string) get_option( self::OPTION_INSTALL_ID, $id );
		}
		return $id;
	}

	/**
	 * The secret the flush route asks for; made once.
	 */
	public static function flush_token(): string {
		$token = (string) get_option( self::OPTION_FLUSH_TOKEN, '' );
		if ( '' === $token ) {
			$token = wp_generate_password( 40, false );
			add_option( self::OPTION_FLUSH_TOKEN, $token, '', 'yes' );
			$token = (string) get_option( self::OPTION_FLUSH_TOKEN, $token );
		}
		return $token;
	}

	/**
	 * Sends batches while the head is due and the relay takes them.
	 *
	 * @param float $deadline microtime(true) after which no new batch starts.
	 * @return int Events the relay accepted.
	 */
	private function drain( float $deadline ): int {
		global $wpdb;
		$table = self::table();
		$limit = self::BATCH_EVENTS;
		$sent  = 0;
		while ( microtime( true ) < $deadline ) {
			$rows = $wpdb->get_results( $wpdb->prepare( "SELECT id, event_id, payload, attempts, next_attempt_at FROM {$table} ORDER BY id LIMIT %d", $limit ) );
			if ( ! $rows || (int) $rows[0]->next_attempt_at > time() ) {
				return $sent;
			}
			$ids   = array();
			$parts = array();
			$size  = 13;
			foreach ( $rows as $row ) {
				$part = '{"id":' . wp_json_encode( self::event_id( $row ) ) . ',' . substr( $row->payload, 1 );
				if ( $parts && $size + strlen( $part ) + 1 > self::MAX_BODY_BYTES ) {
					break;
				}
				$ids[]   = (int) $row->id;
				$parts[] = $part;
				$size   += strlen( $part ) + 1;
			}
			$body = $this->client->events_body( $parts );
			// The same batch sent again keeps its webhook-id, so the relay answers it from its receipt.
			$webhook_id = sprintf( 'msg_%s_%d-%d_%s', self::install_id(), $ids[0], end( $ids ), substr( md5( implode( ',', $ids ) ), 0, 8 ) );
			$answer     = $this->client->post_events( $body, $webhook_id );

			if ( 202 === $answer['status'] ) {
				$wpdb->query( "DELETE FROM {$table} WHERE id IN (" . implode( ',', $ids ) . ')' );
				$sent += count( $ids );
				$this->record( array( 'last_sent_at' => time(), 'last_sent_count' => count( $ids ), 'last_error' => '' ) );
				$limit = self::BATCH_EVENTS;
				continue;
			}
			if ( 413 === $answer['status'] && count( $ids ) > 1 ) {
				$limit = max( 1, intdiv( count( $ids ), 2 ) );
				continue;
			}
			$this->defer( (int) $rows[0]->id, (int) $rows[0]->attempts + 1, $answer );
			return $sent;
		}
		return $sent;
	}

	/**
	 * Holds the outbox after a failed batch: backoff on its head row, error kept for the admin.
	 *
	 * @param int   $head_id  The head row.
	 * @param int   $attempts Failed attempts of the head, this one included.
	 * @param array $answer   The relay client's answer.
	 */
	private function defer( int $head_id, int $attempts, array $answer ): void {
		global $wpdb;
		$wait = self::BACKOFF[ min( $attempts, count( self::BACKOFF ) ) - 1 ];
		if ( null !== $answer['retry_after'] ) {
			$wait = min( max( $answer['retry_after'], 1 ), end( self::BACKOFF ) );
		}
		$status = null === $answer['status'] ? __( 'no answer', 'userrelay' ) : (string) $answer['status'];
		$error  = sprintf( '%s (%s): %s', $this->client->events_url(), $status, UserRelay_Relay_Client::error_text( $answer ) );
		$wpdb->update(
			self::table(),
			array(
				'attempts'        => $attempts,
				'next_attempt_at' => time() + $wait,
				'last_error'      => substr( $error, 0, 1000 ),
			),
			array( 'id' => $head_id ),
			array( '%d', '%d', '%s' ),
			array( '%d' )
		);
		$this->record(
			array(
				'last_error'    => $error,
				'last_error_at' => time(),
				'last_status'   => $answer['status'],
			)
		);
		error_log( "UserRelay: sending the outbox failed (attempt {$attempts}, next in {$wait} s): {$error}" );
	}

	/**
	 * When the head row is due (unix seconds), or null when the outbox is empty.
	 */
	private function head_due_at(): ?int {
		global $wpdb;
		$table = self::table();
		$due   = $wpdb->get_var( "SELECT next_attempt_at FROM {$table} ORDER BY id LIMIT 1" );
		return null === $due ? null : (int) $due;
	}

	/**
	 * A payload as JSON, its meta left out when the event would be too large to send.
	 *
	 * @param array $payload The event without its id.
	 */
	private function encode( array $payload ): ?string {
		$json = wp_json_encode( $payload, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE );
		if ( false !== $json && strlen( $json ) > self::MAX_EVENT_BYTES && isset( $payload['user']['meta'] ) ) {
			error_log( "UserRelay: the meta of user {$payload['user']['id']} is too large to send (" . strlen( $json ) . ' bytes); sending the event without it' );
			unset( $payload['user']['meta'] );
			$payload['actions'] = array_values( array_diff( $payload['actions'], array( 'metadata' ) ) );
			if ( ! $payload['actions'] ) {
				return null;
			}
			$json = wp_json_encode( $payload, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE );
		}
		if ( false === $json || strlen( $json ) > self::MAX_EVENT_BYTES ) {
			error_log( 'UserRelay: an event of user ' . $payload['user']['id'] . ' cannot be encoded within ' . self::MAX_EVENT_BYTES . ' bytes; not sent' );
			return null;
		}
		return $json;
	}

	/**
	 * Merges facts into the status option (not autoloaded: only the settings page reads it).
	 *
	 * @param array $facts Keys to set.
	 */
	private function record( array $facts ): void {
		update_option( self::OPTION_STATUS, array_merge( self::status(), $facts ), 'no' );
	}

	/**
	 * The flush lock's name: MySQL named locks are server-wide, so it names this site's tables.
	 */
	private static function lock_name(): string {
		global $wpdb;
		return 'userrelay_flush_' . substr( md5( $wpdb->dbname . '|' . $wpdb->prefix ), 0, 16 );
	}
}
