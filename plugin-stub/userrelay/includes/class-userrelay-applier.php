<?php
/**
 * Applying: the events the relay delivers, made real on this site, each once and on its own.
 *
 * One applier at a time per site (a MariaDB named lock over the whole batch; not obtained in
 * LOCK_WAIT seconds, every event is answered 503): parallel appliers deadlock in InnoDB
 * (wp_insert_user() updates the user_count option row while another holds wp_usermeta locks).
 * Each event runs in its own database transaction and try/catch, so one bad event never fails
 * the others: it claims its origin in {prefix}userrelay_applied first (a repeat answers 208 and
 * changes nothing), then has UserRelay_Event_Changes apply its actions to its user (checked by
 * UserRelay_Delivery_Checks before anything is written, written through core's APIs).
 * This class owns the batch, the transaction and the answer; not what an event changes.
 * All or nothing: a `query` filter watches every statement of the event's transaction. It runs
 * before wpdb::flush(), so it sees the previous statement's error; after the first error it
 * turns the event's further statements into no-ops (MariaDB rolled the transaction back on a
 * deadlock, and anything after would autocommit). The last statement and the COMMIT are checked
 * too. Such an event is rolled back and answered 503 with retry_after, never 200.
 * Reporting is suppressed meanwhile, so nothing applied here is sent back (no echo), and core's
 * "your email/password changed" mails are not sent: the change was made, and mailed, elsewhere.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Applies delivered events.
 */
final class UserRelay_Applier {

	/** Seconds of applying per request; events left over get no result and the relay resends them. */
	const BUDGET = 20;

	/** Seconds to wait for the site's apply lock before answering 503. */
	const LOCK_WAIT = 10;

	/** Seconds the relay is asked to wait before resending an event answered 503. */
	const RETRY_AFTER = 5;

	/**
	 * Internal status of a delivery older than what this site holds in every group it carries:
	 * answered 200 with "stale": true (done, nothing to retry; docs/protocol.md).
	 */
	const STALE = -200;

	/**
	 * Internal status of an event the userrelay_incoming_event filter dropped: answered 200 with
	 * "dropped": true (taken once, nothing written).
	 */
	const DROPPED = -201;

	/**
	 * Checks run before writing.
	 *
	 * @var UserRelay_Delivery_Checks
	 */
	private $checks;

	/**
	 * The event in progress's changes to its user.
	 *
	 * @var UserRelay_Event_Changes
	 */
	private $changes;

	/**
	 * Hooks, told which users a delivery changed.
	 *
	 * @var UserRelay_Hooks
	 */
	private $hooks;

	/**
	 * Whether the query filter watches statements (while an event's transaction is open).
	 *
	 * @var bool
	 */
	private $guarding = false;

	/**
	 * The first database error seen in the event in progress, or null.
	 *
	 * @var string|null
	 */
	private $db_error = null;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings $settings Settings.
	 * @param UserRelay_Hooks    $hooks    Hooks.
	 */
	public function __construct( UserRelay_Settings $settings, UserRelay_Hooks $hooks ) {
		$this->hooks   = $hooks;
		$this->checks  = new UserRelay_Delivery_Checks( $settings );
		$this->changes = new UserRelay_Event_Changes( $settings, $this->checks );
	}

	/**
	 * The table of applied origins.
	 */
	public static function table(): string {
		global $wpdb;
		return $wpdb->prefix . 'userrelay_applied';
	}

	/**
	 * Applies a batch under the site's apply lock; one result per event, in order, until the
	 * time budget is spent.
	 *
	 * @param array $events The "events" of the body.
	 * @return array[] Results.
	 */
	public function apply_batch( array $events ): array {
		global $wpdb;
		$deadline = microtime( true ) + self::BUDGET;
		$lock     = self::lock_name();
		$locked   = $wpdb->get_var( $wpdb->prepare( 'SELECT GET_LOCK(%s, %d)', $lock, self::LOCK_WAIT ) );
		if ( '1' !== (string) $locked ) {
			$why     = null === $locked ? 'cannot take the apply lock: ' . $wpdb->last_error : sprintf( 'another delivery is being applied here (waited %d s for it)', self::LOCK_WAIT );
			$results = array();
			foreach ( $events as $event ) {
				$id        = is_array( $event ) && isset( $event['id'] ) && is_scalar( $event['id'] ) ? (string) $event['id'] : '';
				$results[] = self::result( $id, 503, 0, $why );
			}
			return $results;
		}
		$results = array();
		add_filter( 'query', array( $this, 'guard_query' ), PHP_INT_MAX );
		try {
			foreach ( $events as $event ) {
				if ( microtime( true ) > $deadline ) {
					break; // Missing results mean "not applied": the relay sends those again.
				}
				$results[] = $this->apply_one( $event );
			}
		} finally {
			remove_filter( 'query', array( $this, 'guard_query' ), PHP_INT_MAX );
			$wpdb->query( $wpdb->prepare( 'SELECT RELEASE_LOCK(%s)', $lock ) );
		}
		return $results;
	}

	/**
	 * The apply lock of this site (of the network on multisite, where users are shared): one
	 * name per database and table prefix, within MariaDB's 64 characters.
	 */
	public static function lock_name(): string {
		global $wpdb;
		return 'userrelay_apply_' . md5( DB_NAME . '|' . $wpdb->base_prefix );
	}

	/**
	 * The `query` filter while an event's transaction is open: notes the previous statement's
	 * error (wpdb::flush() has not run yet), and once there is one, makes every further
	 * statement of the event a no-op (query() then returns false).
	 *
	 * @param string $query The statement about to run.
	 * @return string It, or '' to skip it.
	 */
	public function guard_query( $query ) {
		global $wpdb;
		if ( ! $this->guarding ) {
			return $query;
		}
		if ( null === $this->db_error && '' !== (string) $wpdb->last_error ) {
			$this->db_error = (string) $wpdb->last_error;
		}
		return null === $this->db_error ? $query : '';
	}

	/**
	 * Applies one event, then runs the developers' userrelay_event_applied or
	 * userrelay_event_refused action; never throws.
	 *
	 * @param mixed $event One event of the batch.
	 * @return array Its result.
	 */
	private function apply_one( $event ): array {
		$result = $this->apply_event( $event );
		UserRelay_Developer_Hooks::answered( $event, $result );
		return $result;
	}

	// phpcs:disable Squiz.Commenting.FunctionCommentThrowTag.Missing -- Every exception thrown here is caught here.
	/**
	 * Applies one event; never throws: a refusal or failure thrown inside is its result.
	 *
	 * @param mixed $event One event of the batch.
	 * @return array Its result.
	 */
	private function apply_event( $event ): array {
		// phpcs:enable Squiz.Commenting.FunctionCommentThrowTag.Missing
		global $wpdb;
		$id             = is_array( $event ) && isset( $event['id'] ) && is_scalar( $event['id'] ) ? (string) $event['id'] : '';
		$user_id        = 0;
		$this->db_error = null;
		$this->changes->reset();
		try {
			$origin = $this->checks->origin( $event );
			if ( false === $wpdb->query( 'START TRANSACTION' ) ) {
				throw new UserRelay_Apply_Exception( 'cannot start a transaction: ' . $wpdb->last_error, 503 );
			}
			$this->guarding = true;
			$table          = self::table();
			$claimed        = $wpdb->query( $wpdb->prepare( "INSERT IGNORE INTO {$table} (origin_site, origin_event_id, user_id, applied_at) VALUES (%s, %s, 0, %d)", $origin['site'], $origin['event_id'], time() ) );
			if ( false === $claimed ) {
				throw new UserRelay_Apply_Exception( 'cannot record the applied event: ' . $wpdb->last_error, 503 );
			}
			if ( 0 === $claimed ) {
				$this->guarding = false;
				$wpdb->query( 'ROLLBACK' );
				$prior = (int) $wpdb->get_var( $wpdb->prepare( "SELECT user_id FROM {$table} WHERE origin_site = %s AND origin_event_id = %s", $origin['site'], $origin['event_id'] ) );
				return self::result( $id, 208, $prior );
			}
			if ( in_array( 'metadata', $event['actions'], true ) ) {
				$this->checks->meta( $event['user'] ); // The delivery's own keys, before any filter.
			}
			$filtered = UserRelay_Developer_Hooks::incoming( $event );
			self::quiet( true );
			try {
				list( $status, $user_id ) = null === $filtered ? array( self::DROPPED, 0 ) : $this->changes->apply( $filtered );
			} finally {
				self::quiet( false );
			}
			$wpdb->query( $wpdb->prepare( "UPDATE {$table} SET user_id = %d WHERE origin_site = %s AND origin_event_id = %s", $user_id, $origin['site'], $origin['event_id'] ) );
			foreach ( isset( $event['merged'] ) && is_array( $event['merged'] ) ? $event['merged'] : array() as $merged ) {
				if ( is_string( $merged ) && $merged !== $origin['event_id'] ) {
					$wpdb->query( $wpdb->prepare( "INSERT IGNORE INTO {$table} (origin_site, origin_event_id, user_id, applied_at) VALUES (%s, %s, %d, %d)", $origin['site'], $merged, $user_id, time() ) );
				}
			}
			$this->guard_query( '' ); // The last statement's error, if any.
			$this->guarding = false;
			if ( null !== $this->db_error ) {
				throw new UserRelay_Apply_Exception( 'database error while applying (rolled back): ' . $this->db_error, 503 );
			}
			if ( false === $wpdb->query( 'COMMIT' ) || '' !== (string) $wpdb->last_error ) {
				$this->db_error = (string) $wpdb->last_error;
				throw new UserRelay_Apply_Exception( 'the commit failed (rolled back): ' . $wpdb->last_error, 503 );
			}
			if ( $user_id ) {
				$this->hooks->note_applied( $user_id, $origin );
			}
			$observed = $this->changes->observed();
			if ( array() !== $observed ) {
				// The clock moves past what was applied: past the newest of it, in one step.
				UserRelay_Stored_Versions::observe( array_reduce( $observed, array( 'UserRelay_Versions', 'newer' ) ) );
			}
			if ( self::DROPPED === $status ) {
				return self::result( $id, 200, 0 ) + array( 'dropped' => true );
			}
			return self::result( $id, $status, $user_id, '', $this->changes->skipped(), self::STALE === $status );
		} catch ( UserRelay_Apply_Exception $refusal ) {
			return $this->failed( $id, $refusal->getCode() ? $refusal->getCode() : 422, $refusal->getMessage() );
		} catch ( Throwable $error ) {
			error_log( "UserRelay: applying event {$id} failed: " . $error->getMessage() . ' at ' . $error->getFile() . ':' . $error->getLine() );
			return $this->failed( $id, 500, 'internal error while applying: ' . $error->getMessage() );
		}
	}

	/**
	 * Rolls a failed event back and answers it. After a database error whatever the refusal
	 * said, the answer is 503: the event may well apply when sent again.
	 *
	 * @param string $id     The delivery id.
	 * @param int    $status The refusal's status.
	 * @param string $error  The refusal's message.
	 */
	private function failed( string $id, int $status, string $error ): array {
		if ( $this->guarding ) {
			$this->guard_query( '' );
		}
		$this->guarding = false;
		if ( null !== $this->db_error ) {
			if ( 503 !== $status ) {
				$error = 'database error while applying (rolled back): ' . $this->db_error;
			}
			$status = 503;
			error_log( "UserRelay: event {$id} rolled back after a database error: {$this->db_error}" );
		}
		$this->roll_back( $this->changes->touched(), null !== $this->db_error );
		$this->db_error = null;
		return self::result( $id, $status, 0, $error );
	}

	/**
	 * Undoes a failed event's writes and forgets what the caches saw of them.
	 *
	 * @param int  $user_id  The user it touched, if known.
	 * @param bool $db_error Whether a database error caused it: then every cache of this
	 *                       request may hold rolled-back rows (options, users), so all go.
	 */
	private function roll_back( int $user_id, bool $db_error = false ): void {
		global $wpdb;
		$wpdb->query( 'ROLLBACK' );
		if ( $db_error ) {
			wp_cache_flush();
		}
		if ( $user_id ) {
			self::quiet( true );
			clean_user_cache( $user_id );
			wp_cache_delete( $user_id, 'user_meta' );
			self::quiet( false );
		}
	}

	/**
	 * Suppresses reporting and core's change notifications while applying.
	 *
	 * @param bool $on Whether applying starts (true) or ends.
	 */
	private static function quiet( bool $on ): void {
		$hook = $on ? 'add_filter' : 'remove_filter';
		$hook( 'send_email_change_email', '__return_false' );
		$hook( 'send_password_change_email', '__return_false' );
		if ( $on ) {
			UserRelay_Hooks::suppress();
		} else {
			UserRelay_Hooks::resume();
		}
	}

	/**
	 * One result of the answer.
	 *
	 * @param string   $id      The delivery id.
	 * @param int      $status  Per-event status.
	 * @param int      $user_id Local user id, if any.
	 * @param string   $error   Why it was not applied.
	 * @param string[] $skipped Field groups left as they were (older than this site's).
	 * @param bool     $stale   Whether nothing was newer than this site's (status 200 then).
	 */
	private static function result( string $id, int $status, int $user_id, string $error = '', array $skipped = array(), bool $stale = false ): array {
		$result = array(
			'id'     => $id,
			'status' => $stale ? 200 : $status,
		);
		if ( $stale ) {
			$result['stale'] = true; // Older than what this site holds: done, nothing changed.
		}
		if ( $skipped ) {
			$result['skipped'] = array_values( $skipped );
		}
		if ( $user_id > 0 ) {
			$result['user_id'] = $user_id;
		}
		if ( '' !== $error ) {
			$result['error'] = $error;
		}
		if ( 503 === $status ) {
			$result['retry_after'] = self::RETRY_AFTER;
		}
		return $result;
	}
}
