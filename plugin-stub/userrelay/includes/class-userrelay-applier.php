<?php
/**
 * Applying: the events the relay delivers, made real on this site, each once and on its own.
 *
 * One applier at a time per site (a MariaDB named lock over the whole batch; not obtained in
 * LOCK_WAIT seconds, every event is answered 503): parallel appliers deadlock in InnoDB
 * (wp_insert_user() updates the user_count option row while another holds wp_usermeta locks).
 * Each event runs in its own database transaction and try/catch, so one bad event never fails
 * the others: it claims its origin in {prefix}userrelay_applied first (a repeat answers 208 and
 * changes nothing), has UserRelay_Delivery_Checks refuse what cannot be applied before anything
 * is written, then writes through core's APIs.
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

	/** Profile fields of the protocol, as wp_insert_user() field names. */
	const PROFILE_FIELDS = array(
		'first_name'   => 'first_name',
		'last_name'    => 'last_name',
		'nickname'     => 'nickname',
		'display_name' => 'display_name',
		'url'          => 'user_url',
		'description'  => 'description',
		'locale'       => 'locale',
	);

	/**
	 * Settings.
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * Checks run before writing.
	 *
	 * @var UserRelay_Delivery_Checks
	 */
	private $checks;

	/**
	 * Hooks, told which users a delivery changed.
	 *
	 * @var UserRelay_Hooks
	 */
	private $hooks;

	/**
	 * Versions applied in this batch, moved into the site's clock once their event committed.
	 *
	 * @var string[]
	 */
	private $observed = array();

	/**
	 * Groups a delivery in progress skipped as older than what the user holds here.
	 *
	 * @var string[]
	 */
	private $skipped = array();

	/**
	 * The local user the event in progress touches, so a rollback can clean its caches.
	 *
	 * @var int
	 */
	private $touched = 0;

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
		$this->settings = $settings;
		$this->hooks    = $hooks;
		$this->checks   = new UserRelay_Delivery_Checks( $settings );
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

	/**
	 * Applies one event; never throws.
	 *
	 * @param mixed $event One event of the batch.
	 * @return array Its result.
	 */
	private function apply_event( $event ): array {
		global $wpdb;
		$id             = is_array( $event ) && isset( $event['id'] ) && is_scalar( $event['id'] ) ? (string) $event['id'] : '';
		$user_id        = 0;
		$this->touched  = 0;
		$this->observed = array();
		$this->skipped  = array();
		$this->db_error = null;
		try {
			$origin = $this->checks->origin( $event );
			if ( false === $wpdb->query( 'START TRANSACTION' ) ) {
				throw new UserRelay_Apply_Exception( 'cannot start a transaction: ' . $wpdb->last_error, 503 );
			}
			$this->guarding = true;
			$table          = self::table();
			$claimed        = $wpdb->query( $wpdb->prepare( "INSERT IGNORE INTO {$table} (origin_site, origin_event_id, user_id, applied_at) VALUES (%s, %s, 0, %d)", $origin['site'], $origin['event_id'], time() ) ); // phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared
			if ( false === $claimed ) {
				throw new UserRelay_Apply_Exception( 'cannot record the applied event: ' . $wpdb->last_error, 503 );
			}
			if ( 0 === $claimed ) {
				$this->guarding = false;
				$wpdb->query( 'ROLLBACK' );
				$prior = (int) $wpdb->get_var( $wpdb->prepare( "SELECT user_id FROM {$table} WHERE origin_site = %s AND origin_event_id = %s", $origin['site'], $origin['event_id'] ) ); // phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared
				return self::result( $id, 208, $prior );
			}
			if ( in_array( 'metadata', $event['actions'], true ) ) {
				$this->checks->meta( $event['user'] ); // The delivery's own keys, before any filter.
			}
			$filtered = UserRelay_Developer_Hooks::incoming( $event );
			self::quiet( true );
			try {
				list( $status, $user_id ) = null === $filtered ? array( self::DROPPED, 0 ) : $this->apply_actions( $filtered );
			} finally {
				self::quiet( false );
			}
			$wpdb->update( $table, array( 'user_id' => $user_id ), array( 'origin_site' => $origin['site'], 'origin_event_id' => $origin['event_id'] ), array( '%d' ), array( '%s', '%s' ) );
			foreach ( isset( $event['merged'] ) && is_array( $event['merged'] ) ? $event['merged'] : array() as $merged ) {
				if ( is_string( $merged ) && $merged !== $origin['event_id'] ) {
					$wpdb->query( $wpdb->prepare( "INSERT IGNORE INTO {$table} (origin_site, origin_event_id, user_id, applied_at) VALUES (%s, %s, %d, %d)", $origin['site'], $merged, $user_id, time() ) ); // phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared
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
			foreach ( $this->observed as $version ) {
				UserRelay_Versions::observe( $version ); // The clock moves past what was applied.
			}
			$this->observed = array();
			if ( self::DROPPED === $status ) {
				return self::result( $id, 200, 0 ) + array( 'dropped' => true );
			}
			return self::result( $id, $status, $user_id, '', $this->skipped, self::STALE === $status );
		} catch ( UserRelay_Apply_Exception $refusal ) {
			return $this->failed( $id, $refusal->getCode() ? $refusal->getCode() : 422, $refusal->getMessage() );
		} catch ( Throwable $error ) {
			error_log( "UserRelay: applying event {$id} failed: " . $error->getMessage() . ' at ' . $error->getFile() . ':' . $error->getLine() ); // phpcs:ignore WordPress.PHP.DevelopmentFunctions.error_log_error_log
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
			error_log( "UserRelay: event {$id} rolled back after a database error: {$this->db_error}" ); // phpcs:ignore WordPress.PHP.DevelopmentFunctions.error_log_error_log
		}
		$this->roll_back( $this->touched, null !== $this->db_error );
		$this->db_error = null;
		return self::result( $id, $status, 0, $error );
	}

	/**
	 * Applies the event's actions to the matched (or a new) user.
	 *
	 * @param array $event A checked event.
	 * @return array{0: int, 1: int} Status and local user id.
	 * @throws UserRelay_Apply_Exception When the event cannot be applied.
	 */
	private function apply_actions( array $event ): array {
		$actions = $event['actions'];
		$data    = $event['user'];
		$match   = isset( $event['match'] ) && is_array( $event['match'] ) ? $event['match'] : array();
		$user    = $this->find_user( $data, $match );
		$this->touched = $user ? $user->ID : 0;
		if ( $user ) {
			$this->checks->member( $user, $data['login'] );
		}
		$versions = self::versions( $event );
		if ( null !== $versions ) {
			return $this->apply_versioned( $event, $user, $versions, $match );
		}
		// A delivery without versions (an older relay or plugin): applied as it says.
		if ( in_array( 'delete', $actions, true ) ) {
			return array( 200, $user ? $this->delete( $user, $data['login'] ) : 0 );
		}
		if ( $user && ! empty( $event['backfill'] ) && isset( $event['occurred_at'] ) && is_numeric( $event['occurred_at'] ) && UserRelay_Snapshot::modified( $user ) > (float) $event['occurred_at'] ) {
			// Initial sync: this user changed here after the source's snapshot was taken; the
			// newer data stays (docs/adr/0006-initial-sync.md). Answered 200: nothing to retry.
			return array( 200, $user->ID );
		}
		$roles = in_array( 'roles', $actions, true ) ? $this->checks->roles( $data ) : null;
		$hash  = in_array( 'password', $actions, true ) ? $this->checks->hash( $data ) : null;
		if ( in_array( 'metadata', $actions, true ) ) {
			$this->checks->meta( $data );
		}
		$this->checks->not_privileged( $user, $roles, $data['login'] );
		$status = 200;
		if ( ! $user ) {
			if ( ! in_array( 'create', $actions, true ) && empty( $event['create_missing'] ) ) {
				throw new UserRelay_Apply_Exception( sprintf( 'no user with email %1$s or login %2$s here, and create_missing is false', $data['email'], $data['login'] ), 404 );
			}
			$user          = $this->create( $data, $actions, null !== $roles );
			$this->touched = $user->ID;
			$status        = 201;
		} elseif ( array_intersect( array( 'create', 'edit' ), $actions ) ) {
			$this->update_profile( $user, $data, true, true, $match );
		}
		if ( null !== $hash && ! hash_equals( (string) get_userdata( $user->ID )->user_pass, $hash ) ) {
			global $wpdb;
			// wp_insert_user() would hash it again; the relay carries the stored hash, never a password.
			$wpdb->update( $wpdb->users, array( 'user_pass' => $hash, 'user_activation_key' => '' ), array( 'ID' => $user->ID ) );
			clean_user_cache( $user->ID );
		}
		if ( null !== $roles ) {
			$user = get_userdata( $user->ID );
			foreach ( array_diff( $user->roles, $roles ) as $role ) {
				$user->remove_role( $role );
			}
			foreach ( array_diff( $roles, $user->roles ) as $role ) {
				$user->add_role( $role );
			}
		}
		if ( in_array( 'metadata', $actions, true ) ) {
			$this->apply_meta( $user->ID, $data );
		}
		if ( isset( $event['occurred_at'] ) && is_numeric( $event['occurred_at'] ) ) {
			// The user now holds the source's data as of then (what an initial sync compares).
			UserRelay_Snapshot::modified_now( $user->ID, (float) $event['occurred_at'] );
		}
		return array( $status, $user->ID );
	}

	/**
	 * The delivery's versions (group => version), or null for a delivery without them.
	 *
	 * @param array $event A checked event.
	 * @throws UserRelay_Apply_Exception When they are malformed.
	 */
	private static function versions( array $event ): ?array {
		if ( ! isset( $event['versions'] ) ) {
			return null;
		}
		if ( ! is_array( $event['versions'] ) ) {
			throw new UserRelay_Apply_Exception( 'versions: expected an object of field group to version', 422 );
		}
		foreach ( $event['versions'] as $group => $version ) {
			if ( null === UserRelay_Versions::parse( $version ) ) {
				throw new UserRelay_Apply_Exception( sprintf( 'versions.%s: expected a version such as "1764250000125.0@shop"', (string) $group ), 422 );
			}
		}
		return $event['versions'];
	}

	/**
	 * Applies a delivery that carries versions: each field group only where its version is
	 * newer than the one the user holds here; a delete unless the user here is a newer
	 * incarnation; nothing for a person deleted here after the delivery's incarnation was
	 * created (docs/adr/0011-convergent-versions.md).
	 *
	 * @param array        $event    A checked event.
	 * @param WP_User|null $user     The local user, if found.
	 * @param array        $versions The delivery's versions.
	 * @param array        $match    The event's match.
	 * @return array{0: int, 1: int} Status (self::STALE when nothing was newer) and user id.
	 * @throws UserRelay_Apply_Exception When the event cannot be applied.
	 */
	private function apply_versioned( array $event, ?WP_User $user, array $versions, array $match ): array {
		$actions = $event['actions'];
		$data    = $event['user'];
		$created = $versions['created'] ?? UserRelay_Versions::MIN;
		// A push or pull link: the source wins over this site's own changes (never over a
		// newer change of its own).
		$source_wins = ! empty( $event['source_wins'] );
		if ( in_array( 'delete', $actions, true ) ) {
			$deleted = $versions['delete'] ?? UserRelay_Versions::MIN;
			if ( $user ) {
				$held = UserRelay_Versions::held( UserRelay_Versions::stored( $user->ID ), 'created', UserRelay_Versions::implied_of( $user ) );
				if ( ! UserRelay_Versions::delete_applies( $held, $deleted ) ) {
					$this->skipped = array( 'created' );
					return array( self::STALE, $user->ID ); // Created here again after that delete.
				}
			}
			UserRelay_Versions::bury( $data['email'], $data['login'], $deleted );
			$this->observed[] = $deleted;
			return array( 200, $user ? $this->delete( $user, $data['login'] ) : 0 );
		}
		$groups = self::carried_groups( $actions, $data );
		if ( ! $user ) {
			$by   = self::by_login( $data, $match ) ? 'login' : 'email';
			$gone = UserRelay_Versions::gone( $by, $data[ $by ] );
			if ( ! $source_wins && null !== $gone && ! UserRelay_Versions::revives( $created, $gone ) ) {
				$this->skipped = $groups;
				return array( self::STALE, 0 ); // That person was deleted here after this account began.
			}
			$stored = array_fill_keys( UserRelay_Versions::BASE_GROUPS, UserRelay_Versions::MIN );
			$apply  = $groups;
		} else {
			$stored   = UserRelay_Versions::stored( $user->ID );
			$implied  = UserRelay_Versions::implied_of( $user );
			$decision = UserRelay_Versions::decide( $groups, $versions, $stored, $implied, $source_wins );
			$apply    = $decision['apply'];
			$stored   = null === $stored ? UserRelay_Versions::materialize( $implied ) : $stored;
			$this->skipped = $decision['skip'];
			if ( ! $apply ) {
				return array( self::STALE, $user->ID );
			}
		}
		$roles = in_array( 'roles', $apply, true ) ? $this->checks->roles( $data ) : null;
		$hash  = in_array( 'password', $apply, true ) ? $this->checks->hash( $data ) : null;
		if ( in_array( 'metadata', $actions, true ) ) {
			$this->checks->meta( $data );
		}
		$this->checks->not_privileged( $user, $roles, $data['login'] );
		$status = 200;
		if ( ! $user ) {
			if ( ! in_array( 'create', $actions, true ) && empty( $event['create_missing'] ) ) {
				throw new UserRelay_Apply_Exception( sprintf( 'no user with email %1$s or login %2$s here, and create_missing is false', $data['email'], $data['login'] ), 404 );
			}
			$user          = $this->create( $data, $actions, null !== $roles );
			$this->touched = $user->ID;
			$status        = 201;
		} else {
			$this->update_profile( $user, $data, in_array( 'email', $apply, true ), in_array( 'profile', $apply, true ), $match );
		}
		$this->write_hash( $user->ID, $hash );
		$this->write_roles( $user->ID, $roles );
		$meta_keys = array();
		foreach ( $apply as $group ) {
			if ( 0 === strpos( $group, 'meta:' ) ) {
				$meta_keys[] = substr( $group, 5 );
			}
		}
		if ( in_array( 'metadata', $actions, true ) ) {
			$this->apply_meta( $user->ID, $data, $meta_keys );
		}
		$map            = UserRelay_Versions::record( $stored, $apply, $versions, array(), $source_wins );
		$map['created'] = UserRelay_Versions::newer( $map['created'] ?? UserRelay_Versions::MIN, $created );
		UserRelay_Versions::store( $user->ID, $map );
		foreach ( $apply as $group ) {
			$this->observed[] = $versions[ $group ] ?? UserRelay_Versions::MIN;
		}
		if ( isset( $event['occurred_at'] ) && is_numeric( $event['occurred_at'] ) ) {
			UserRelay_Snapshot::modified_now( $user->ID, (float) $event['occurred_at'] );
		}
		return array( $status, $user->ID );
	}

	/**
	 * The field groups a delivery carries, from its actions.
	 *
	 * @param string[] $actions The event's actions.
	 * @param array    $data    The event's user.
	 * @return string[]
	 */
	private static function carried_groups( array $actions, array $data ): array {
		$groups = array();
		if ( array_intersect( array( 'create', 'edit' ), $actions ) ) {
			$groups[] = 'profile';
			$groups[] = 'email';
		}
		foreach ( array( 'password', 'roles' ) as $group ) {
			if ( in_array( $group, $actions, true ) ) {
				$groups[] = $group;
			}
		}
		if ( in_array( 'metadata', $actions, true ) ) {
			$keys = array_merge( array_keys( isset( $data['meta'] ) && is_array( $data['meta'] ) ? $data['meta'] : array() ), isset( $data['meta_deleted'] ) && is_array( $data['meta_deleted'] ) ? $data['meta_deleted'] : array() );
			foreach ( array_unique( array_map( 'strval', $keys ) ) as $key ) {
				$groups[] = 'meta:' . $key;
			}
		}
		return $groups;
	}

	/**
	 * Writes a carried password hash (wp_insert_user() would hash it again; the relay carries
	 * the stored hash, never a password).
	 *
	 * @param int         $user_id Local user id.
	 * @param string|null $hash    The hash, or null.
	 */
	private function write_hash( int $user_id, ?string $hash ): void {
		global $wpdb;
		if ( null !== $hash && ! hash_equals( (string) get_userdata( $user_id )->user_pass, $hash ) ) {
			$wpdb->update( $wpdb->users, array( 'user_pass' => $hash, 'user_activation_key' => '' ), array( 'ID' => $user_id ) );
			clean_user_cache( $user_id );
		}
	}

	/**
	 * Gives the user exactly these roles.
	 *
	 * @param int           $user_id Local user id.
	 * @param string[]|null $roles   The roles, or null.
	 */
	private function write_roles( int $user_id, ?array $roles ): void {
		if ( null === $roles ) {
			return;
		}
		$user = get_userdata( $user_id );
		foreach ( array_diff( $user->roles, $roles ) as $role ) {
			$user->remove_role( $role );
		}
		foreach ( array_diff( $roles, $user->roles ) as $role ) {
			$user->add_role( $role );
		}
	}

	/**
	 * The local user: by match.user_id first, else by email or login as match.by says, then as
	 * the userrelay_match_user filter says.
	 *
	 * @param array $data  The event's user.
	 * @param array $match The event's match.
	 */
	private function find_user( array $data, array $match ): ?WP_User {
		$user = isset( $match['user_id'] ) && is_numeric( $match['user_id'] ) ? get_userdata( (int) $match['user_id'] ) : false;
		if ( ! $user ) {
			// A user without an email is matched by login, whatever the link says.
			$user = self::by_login( $data, $match ) ? get_user_by( 'login', $data['login'] ) : get_user_by( 'email', $data['email'] );
		}
		// A developer's choice is checked as any match is: member here, not privileged.
		return UserRelay_Developer_Hooks::match( $user ? $user : null, $data, $match );
	}

	/**
	 * Whether a delivered user is matched by login: as the link says, or having no email.
	 *
	 * @param array $data  The event's user.
	 * @param array $match The event's match.
	 */
	private static function by_login( array $data, array $match ): bool {
		return '' === $data['email'] || ( isset( $match['by'] ) && 'login' === $match['by'] );
	}

	/**
	 * Creates the user with a random password (the real hash, if any, is written after).
	 *
	 * @param array    $data      The event's user.
	 * @param string[] $actions   The event's actions.
	 * @param bool     $set_roles Whether roles follow (then no default role is given).
	 * @throws UserRelay_Apply_Exception When WordPress refuses.
	 */
	private function create( array $data, array $actions, bool $set_roles ): WP_User {
		$userdata = array(
			'user_login' => $data['login'],
			'user_email' => $data['email'],
			'user_pass'  => wp_generate_password( 32, true, true ),
		);
		if ( array_intersect( array( 'create', 'edit' ), $actions ) ) {
			$userdata += $this->profile_fields( $data );
			if ( isset( $data['registered'] ) && is_string( $data['registered'] ) && preg_match( '/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/', $data['registered'] ) ) {
				$userdata['user_registered'] = $data['registered'];
			}
		}
		if ( $set_roles ) {
			$userdata['role'] = '';
		}
		// Core's REST API slashes too: wp_insert_user() expects slashed input.
		$user_id = wp_insert_user( wp_slash( $userdata ) );
		if ( is_wp_error( $user_id ) ) {
			$taken = 'existing_user_login' === $user_id->get_error_code() ? get_user_by( 'login', $data['login'] ) : false;
			if ( $taken ) {
				throw new UserRelay_Apply_Exception( sprintf( "cannot create user '%s': that login belongs to user %d here, whose email is not %s", $data['login'], $taken->ID, $data['email'] ), 422 );
			}
			throw new UserRelay_Apply_Exception( sprintf( "cannot create user '%s': %s", $data['login'], $user_id->get_error_message() ), 422 );
		}
		return get_userdata( $user_id );
	}

	/**
	 * Updates email and profile fields through wp_update_user().
	 *
	 * @param WP_User $user    The local user.
	 * @param array   $data    The event's user.
	 * @param bool    $email   Whether the email is written.
	 * @param bool    $profile Whether the other profile fields are (the login among them).
	 * @param array   $match   The event's match.
	 * @throws UserRelay_Apply_Exception When WordPress refuses.
	 */
	private function update_profile( WP_User $user, array $data, bool $email = true, bool $profile = true, array $match = array() ): void {
		// A rename reported by the source, of a login this user has here (users paired with
		// different logins keep theirs).
		$renamed_from = isset( $data['renamed_from'] ) && is_string( $data['renamed_from'] ) ? $data['renamed_from'] : '';
		if ( $profile && $data['login'] !== $user->user_login && '' !== $renamed_from && strtolower( $renamed_from ) === strtolower( $user->user_login ) ) {
			$user = $this->rename( $user, $data['login'], $match );
		}
		// A user without an email there never takes this user's email away.
		$email    = $email && '' !== $data['email'];
		$userdata = ( $email ? array( 'user_email' => $data['email'] ) : array() ) + ( $profile ? $this->profile_fields( $data ) : array() );
		foreach ( $userdata as $field => $value ) {
			if ( (string) $user->get( $field ) === $value ) {
				unset( $userdata[ $field ] );
			}
		}
		if ( ! $userdata ) {
			return;
		}
		$userdata['ID'] = $user->ID;
		$result         = wp_update_user( wp_slash( $userdata ) );
		if ( is_wp_error( $result ) ) {
			throw new UserRelay_Apply_Exception( sprintf( "cannot update user '%s' (%d): %s", $user->user_login, $user->ID, $result->get_error_message() ), 422 );
		}
	}

	/**
	 * Writes meta and deletes meta_deleted keys, all of them syncable (checked before anything
	 * was written; checked again here, so no path can write a protected key). Keys and values
	 * are slashed: the meta API unslashes both, and backslashes would be lost.
	 *
	 * @param int           $user_id Local user id.
	 * @param array         $data    The event's user.
	 * @param string[]|null $only    The keys to write or remove (null: every key carried).
	 */
	private function apply_meta( int $user_id, array $data, ?array $only = null ): void {
		$meta = isset( $data['meta'] ) && is_array( $data['meta'] ) ? $data['meta'] : array();
		foreach ( $meta as $key => $value ) {
			if ( $this->settings->is_meta_denied( (string) $key ) ) {
				throw new UserRelay_Apply_Exception( (string) $this->settings->meta_problem( (string) $key ), 422 );
			}
			if ( null === $only || in_array( (string) $key, $only, true ) ) {
				self::write_meta( $user_id, (string) $key, (array) UserRelay_Snapshot::meta_values( $value ) );
			}
		}
		$deleted = isset( $data['meta_deleted'] ) && is_array( $data['meta_deleted'] ) ? $data['meta_deleted'] : array();
		foreach ( $deleted as $key ) {
			if ( ! is_string( $key ) || $this->settings->is_meta_denied( $key ) ) {
				throw new UserRelay_Apply_Exception( 'meta_deleted: ' . ( is_string( $key ) ? (string) $this->settings->meta_problem( $key ) : 'expected meta keys' ), 422 );
			}
			if ( null === $only || in_array( $key, $only, true ) ) {
				delete_user_meta( $user_id, wp_slash( $key ) );
			}
		}
	}

	/**
	 * Gives a meta key exactly these values, in order (one value: update_user_meta(), as
	 * before; several: the key's rows replaced, unless they hold these values already).
	 *
	 * @param int    $user_id Local user id.
	 * @param string $key     Meta key (syncable: checked before).
	 * @param array  $values  Its values.
	 */
	private static function write_meta( int $user_id, string $key, array $values ): void {
		$held = get_user_meta( $user_id, $key, false );
		if ( 1 === count( $values ) && count( $held ) < 2 ) {
			update_user_meta( $user_id, wp_slash( $key ), wp_slash( $values[0] ) );
			return;
		}
		if ( array_values( $held ) === array_values( $values ) ) {
			return;
		}
		delete_user_meta( $user_id, wp_slash( $key ) );
		foreach ( $values as $value ) {
			add_user_meta( $user_id, wp_slash( $key ), wp_slash( $value ) );
		}
	}

	/**
	 * Deletes the user, never losing content unless told to (USERRELAY_DELETE_REASSIGN).
	 *
	 * @param WP_User $user  The local user (a member of this site: checked before).
	 * @param string  $login The event's login, for messages.
	 * @return int Its id.
	 * @throws UserRelay_Apply_Exception When the delete is refused.
	 */
	private function delete( WP_User $user, string $login ): int {
		$this->checks->not_privileged( $user, null, $login );
		$reassign = $this->checks->reassign_target( $user );
		require_once ABSPATH . 'wp-admin/includes/user.php';
		if ( ! wp_delete_user( $user->ID, $reassign ) ) {
			throw new UserRelay_Apply_Exception( sprintf( "WordPress did not delete user '%s' (%d)", $user->user_login, $user->ID ), 500 );
		}
		return $user->ID;
	}

	/**
	 * Renames a user as WordPress core's own tools would (there is no API for it): user_login,
	 * and user_nicename when it was made from the old login, written with $wpdb, then the
	 * caches of the old and new login and nicename cleared. Refused (422, nothing of the event
	 * written) on a link matching users by login (the login is what pairs them), for a login
	 * WordPress would not accept, or one another user holds here.
	 *
	 * @param WP_User $user  The local user.
	 * @param string  $login The login the user has on the source.
	 * @param array   $match The event's match.
	 * @return WP_User The user as it is now.
	 * @throws UserRelay_Apply_Exception When the rename is refused.
	 */
	private function rename( WP_User $user, string $login, array $match ): WP_User {
		global $wpdb;
		$why = null;
		if ( isset( $match['by'] ) && 'login' === $match['by'] ) {
			$why = 'this link matches users by login, so a login is never changed by a delivery; rename the user here too, or match by email';
		} elseif ( sanitize_user( $login, true ) !== $login || ! validate_username( $login ) || mb_strlen( $login ) > 60 ) {
			$why = 'WordPress does not accept that login (at most 60 characters: letters, digits, space, _ . - @)';
		} elseif ( in_array( strtolower( $login ), array_map( 'strtolower', (array) apply_filters( 'illegal_user_logins', array() ) ), true ) ) {
			$why = 'that login is not allowed on this site (illegal_user_logins)';
		} else {
			$holder = get_user_by( 'login', $login );
			if ( $holder && (int) $holder->ID !== (int) $user->ID ) {
				$why = sprintf( 'that login belongs to user %d here', $holder->ID );
			}
		}
		if ( null !== $why ) {
			throw new UserRelay_Apply_Exception( sprintf( "login rename of user '%1\$s' (%2\$d) to '%3\$s' refused: %4\$s", $user->user_login, $user->ID, $login, $why ), 422 );
		}
		$row = array( 'user_login' => $login );
		if ( $user->user_nicename === sanitize_title( mb_substr( $user->user_login, 0, 50 ) ) ) {
			$row['user_nicename'] = $this->free_nicename( $login, (int) $user->ID );
		}
		$wpdb->update( $wpdb->users, $row, array( 'ID' => $user->ID ) );
		clean_user_cache( $user ); // The old login, nicename and email keys go with the object.
		wp_cache_delete( $login, 'userlogins' );
		if ( isset( $row['user_nicename'] ) ) {
			wp_cache_delete( $row['user_nicename'], 'userslugs' );
		}
		return get_userdata( $user->ID );
	}

	/**
	 * A nicename made from a login, unique among users as wp_insert_user() makes it.
	 *
	 * @param string $login   The login.
	 * @param int    $user_id The user it is for.
	 */
	private function free_nicename( string $login, int $user_id ): string {
		global $wpdb;
		$base     = mb_substr( sanitize_title( mb_substr( $login, 0, 50 ) ), 0, 50 );
		$nicename = $base;
		for ( $suffix = 2; $wpdb->get_var( $wpdb->prepare( "SELECT ID FROM {$wpdb->users} WHERE user_nicename = %s AND ID != %d LIMIT 1", $nicename, $user_id ) ); ++$suffix ) {
			$nicename = mb_substr( $base, 0, 49 - strlen( (string) $suffix ) ) . '-' . $suffix;
		}
		return $nicename;
	}

	/**
	 * Profile fields present in the event, as wp_insert_user() fields.
	 *
	 * @param array $data The event's user.
	 * @return array<string, string>
	 */
	private function profile_fields( array $data ): array {
		$fields = array();
		foreach ( self::PROFILE_FIELDS as $name => $field ) {
			if ( isset( $data[ $name ] ) && is_string( $data[ $name ] ) ) {
				$fields[ $field ] = $data[ $name ];
			}
		}
		return $fields;
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
	 * @param string $id      The delivery id.
	 * @param int    $status  Per-event status.
	 * @param int    $user_id Local user id, if any.
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
