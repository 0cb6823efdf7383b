<?php
/**
 * The webhook-ids of the relay's requests accepted here within the timestamp window: a signed
 * request is taken once. A captured request sent again gets 401 and does nothing.
 *
 * One row per accepted request in {prefix}userrelay_seen; the primary key makes the check and
 * the record one atomic INSERT IGNORE. Rows older than twice the window (a timestamp may be up
 * to one window ahead) are useless, since such a request is refused by its timestamp: they are
 * pruned now and then, on the way.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Refuses the second use of a webhook-id.
 */
final class UserRelay_Replay_Guard {

	/** One request in this many prunes the old rows. */
	const PRUNE_ONE_IN = 50;

	/**
	 * The table.
	 */
	public static function table(): string {
		global $wpdb;
		return $wpdb->base_prefix . 'userrelay_seen';
	}

	/**
	 * The table's definition, for dbDelta().
	 *
	 * @param string $charset The charset clause.
	 */
	public static function schema( string $charset ): string {
		$table = self::table();
		// varbinary: webhook-ids are compared byte for byte, not by a case-insensitive collation.
		return "CREATE TABLE {$table} (
  webhook_id varbinary(128) NOT NULL,
  seen_at bigint(20) unsigned NOT NULL,
  PRIMARY KEY  (webhook_id),
  KEY seen_at (seen_at)
) {$charset};";
	}

	/**
	 * True the first time a webhook-id is seen; a WP_Error (401) after that.
	 *
	 * @param string $webhook_id The request's webhook-id (already authenticated).
	 * @return true|WP_Error
	 */
	public static function first_use( string $webhook_id ) {
		global $wpdb;
		$table = self::table();
		if ( strlen( $webhook_id ) > 128 ) {
			return new WP_Error( 'userrelay_bad_webhook_id', __( 'webhook-id is longer than 128 bytes.', 'userrelay' ), array( 'status' => 400 ) );
		}
		if ( 1 === wp_rand( 1, self::PRUNE_ONE_IN ) ) {
			$wpdb->query( $wpdb->prepare( "DELETE FROM {$table} WHERE seen_at < %d LIMIT 1000", time() - 2 * UserRelay_Facts::TIMESTAMP_TOLERANCE ) );
		}
		$inserted = $wpdb->query( $wpdb->prepare( "INSERT IGNORE INTO {$table} (webhook_id, seen_at) VALUES (%s, %d)", $webhook_id, time() ) );
		if ( false === $inserted ) {
			// Cannot remember it: refuse rather than risk taking it twice; the relay retries.
			return new WP_Error( 'userrelay_replay_guard_down', __( 'The request could not be recorded; send it again later.', 'userrelay' ), array( 'status' => 503 ) );
		}
		if ( 0 === $inserted ) {
			return new WP_Error( 'userrelay_replayed', __( 'This webhook-id was already used: a signed request is accepted once.', 'userrelay' ), array( 'status' => 401 ) );
		}
		return true;
	}
}
