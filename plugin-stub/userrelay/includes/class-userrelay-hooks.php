<?php
/**
 * Reporting: which users changed during this request, and how, ending in one event per user.
 *
 * The hooks only take notes per user (never one HTTP call per hook, never a snapshot inside a
 * hook: other plugins write their meta after core's hooks). At 'shutdown' every touched user
 * becomes ONE snapshot with the actions that happened, and all of them go to the outbox in one
 * INSERT. A delete is captured on 'delete_user' while the row still exists and emitted only once
 * 'deleted_user' confirmed it. Changes made while the applier applies a delivery are not
 * reported (echo suppression); it must not send anything itself. Password changes and login
 * renames, which WordPress reports on several paths or none, are noted by
 * UserRelay_Credential_Hooks into the same notes.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Watches user changes and reports them at the end of the request.
 */
final class UserRelay_Hooks {

	/** Fields stored in the users row, as snapshot field => column. */
	const ROW_FIELDS = array(
		'email' => 'user_email',
		'login' => 'user_login',
	) + UserRelay_Profile::COLUMNS;

	/**
	 * Depth of applier calls in progress; reporting is off while above 0.
	 *
	 * @var int
	 */
	private static $suppressed = 0;

	/**
	 * Notes per user id, in the order users were first touched.
	 *
	 * @var array<int, array>
	 */
	private $users = array();

	/**
	 * Identity of users being deleted, captured on delete_user; 'done' set on deleted_user.
	 *
	 * @var array<int, array>
	 */
	private $deleted = array();

	/**
	 * The origin of the last delivery applied to a user in this request.
	 *
	 * @var array<int, array>
	 */
	private $origins = array();

	/**
	 * On a multisite network, its reporter (see report_through()); null on a single site.
	 *
	 * @var UserRelay_Network|null
	 */
	private $network = null;

	/**
	 * Settings.
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * Outbox.
	 *
	 * @var UserRelay_Outbox
	 */
	private $outbox;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings $settings Settings.
	 * @param UserRelay_Outbox   $outbox   Outbox.
	 */
	public function __construct( UserRelay_Settings $settings, UserRelay_Outbox $outbox ) {
		$this->settings = $settings;
		$this->outbox   = $outbox;
	}

	/**
	 * Turns reporting off while a delivery is applied (calls nest).
	 */
	public static function suppress(): void {
		++self::$suppressed;
	}

	/**
	 * Turns reporting back on.
	 */
	public static function resume(): void {
		self::$suppressed = max( 0, self::$suppressed - 1 );
	}

	/**
	 * Whether reporting is off (a delivery is being applied).
	 */
	public static function suppressed(): bool {
		return self::$suppressed > 0;
	}

	/**
	 * On a multisite network: hands this request's notes to UserRelay_Network at shutdown,
	 * which reports them to each blog the users belong to.
	 *
	 * @param UserRelay_Network $network The network's reporter.
	 */
	public function report_through( UserRelay_Network $network ): void {
		$this->network = $network;
	}

	/**
	 * Remembers that a delivery changed this user, so a snapshot built anyway carries its origin.
	 *
	 * @param int   $user_id Local user id.
	 * @param array $origin  {site, event_id}.
	 */
	public function note_applied( int $user_id, array $origin ): void {
		$this->origins[ $user_id ] = $origin;
	}

	/**
	 * Adds the hooks.
	 */
	public function register(): void {
		add_action( 'user_register', array( $this, 'on_user_register' ), 10, 1 );
		add_filter( 'wp_pre_insert_user_data', array( $this, 'before_user_write' ), 10, 3 );
		add_action( 'profile_update', array( $this, 'on_profile_update' ), 10, 2 );
		add_action( 'set_user_role', array( $this, 'on_roles' ), 10, 1 );
		add_action( 'add_user_role', array( $this, 'on_roles' ), 10, 1 );
		add_action( 'remove_user_role', array( $this, 'on_roles' ), 10, 1 );
		add_action( 'added_user_meta', array( $this, 'on_meta_written' ), 10, 3 );
		add_action( 'updated_user_meta', array( $this, 'on_meta_written' ), 10, 3 );
		add_action( 'deleted_user_meta', array( $this, 'on_meta_deleted' ), 10, 3 );
		( new UserRelay_Credential_Hooks( $this ) )->register(); // Passwords and login renames.
		add_action( 'delete_user', array( $this, 'on_delete_user' ), 10, 3 );
		add_action( 'deleted_user', array( $this, 'on_deleted_user' ), 10, 1 );
		add_action( 'shutdown', array( $this, 'on_shutdown' ), 1000 );
		add_action( 'plugins_loaded', array( new UserRelay_Loopback_Kick( $this->outbox ), 'serve' ), 0 );
	}

	/**
	 * A user was created (core meta and the role are saved; other plugins' meta may follow).
	 *
	 * @param int $user_id User id.
	 */
	public function on_user_register( $user_id ): void {
		if ( $this->ignored() ) {
			return;
		}
		$notes           = &$this->touch( (int) $user_id, false );
		$notes['create'] = true;
	}

	/**
	 * Before wp_insert_user() writes an existing user's row: remember the password hash before.
	 *
	 * @param array    $data    Row data (returned unchanged).
	 * @param bool     $update  Whether the user exists.
	 * @param int|null $user_id User id when updating.
	 * @return array
	 */
	public function before_user_write( $data, $update, $user_id ) {
		if ( $update && $user_id && ! $this->ignored() ) {
			$this->touch( (int) $user_id );
		}
		return $data;
	}

	/**
	 * An existing user was updated: diff the row against what it was.
	 *
	 * @param int     $user_id       User id.
	 * @param WP_User $old_user_data The user before the update.
	 */
	public function on_profile_update( $user_id, $old_user_data ): void {
		if ( $this->ignored() || ! $old_user_data instanceof WP_User ) {
			return;
		}
		$notes = &$this->touch( (int) $user_id );
		if ( null === $notes['hash_before'] ) {
			$notes['hash_before'] = (string) $old_user_data->user_pass;
		}
		$now = get_userdata( (int) $user_id );
		if ( ! $now ) {
			return;
		}
		foreach ( self::ROW_FIELDS as $field => $column ) {
			if ( (string) $old_user_data->$column !== (string) $now->$column ) {
				$notes['edit'] = true;
				// Email and the other profile fields are versioned apart (UserRelay_Versions).
				$notes[ 'email' === $field ? 'email' : 'profile' ] = true;
			}
		}
	}

	/**
	 * A role was set, added or removed (bulk changes call this once per user).
	 *
	 * @param int $user_id User id.
	 */
	public function on_roles( $user_id ): void {
		if ( $this->ignored() ) {
			return;
		}
		$notes          = &$this->touch( (int) $user_id );
		$notes['roles'] = true;
	}

	/**
	 * A meta value was added or changed (these fire only for real changes).
	 *
	 * @param int    $meta_id  Meta row id.
	 * @param int    $user_id  User id.
	 * @param string $meta_key Meta key.
	 */
	public function on_meta_written( $meta_id, $user_id, $meta_key ): void {
		$this->note_meta( (int) $user_id, (string) $meta_key, false );
	}

	/**
	 * A meta key was deleted.
	 *
	 * @param int[]  $meta_ids Meta row ids.
	 * @param int    $user_id  User id.
	 * @param string $meta_key Meta key.
	 */
	public function on_meta_deleted( $meta_ids, $user_id, $meta_key ): void {
		$this->note_meta( (int) $user_id, (string) $meta_key, true );
	}

	/**
	 * A user is about to be deleted: capture who they are while the row exists.
	 *
	 * @param int          $user_id  User id.
	 * @param int|null     $reassign Reassign target.
	 * @param WP_User|null $user     The user (WordPress 5.5+).
	 */
	public function on_delete_user( $user_id, $reassign = null, $user = null ): void {
		if ( $this->ignored() ) {
			return;
		}
		$user = $user instanceof WP_User ? $user : get_userdata( (int) $user_id );
		if ( ! $user ) {
			return;
		}
		$this->deleted[ (int) $user_id ] = array(
			'done'  => false,
			'at'    => microtime( true ),
			'login' => (string) $user->user_login,
			'email' => (string) $user->user_email,
			'roles'    => array_values( (array) $user->roles ),
			// Whether partners ever heard of this user (a privileged one or another blog's not).
			'reported' => ( new UserRelay_Snapshot( $this->settings ) )->reported( $user ),
			// The user's versions while they exist: the delete is ordered after all of them.
			'versions' => UserRelay_Stored_Versions::of( $user ),
		);
	}

	/**
	 * The user row is gone.
	 *
	 * @param int $user_id User id.
	 */
	public function on_deleted_user( $user_id ): void {
		if ( isset( $this->deleted[ (int) $user_id ] ) ) {
			$this->deleted[ (int) $user_id ]['done'] = true;
			$this->deleted[ (int) $user_id ]['at']   = microtime( true );
		}
	}

	/**
	 * End of the request: one snapshot per touched user into the outbox, then maybe a flush.
	 */
	public function on_shutdown(): void {
		if ( null !== $this->network ) {
			$this->network->report( $this->users, $this->origins ); // Each blog's own events.
			$this->users   = array();
			$this->deleted = array();
			return;
		}
		if ( ! $this->settings->is_configured() ) {
			return; // Not connected to a relay yet: there is nobody to report to.
		}
		try {
			if ( $this->users || $this->deleted ) {
				$snapshots = new UserRelay_Snapshot( $this->settings );
				$events    = $snapshots->build( $this->users, $this->deleted, $this->origins );
				$this->outbox->enqueue( $events );
			}
			$this->users   = array();
			$this->deleted = array();
			$this->outbox->maybe_kick();
		} catch ( Throwable $error ) {
			error_log( 'UserRelay: reporting at shutdown failed: ' . $error->getMessage() . ' at ' . $error->getFile() . ':' . $error->getLine() );
		}
	}

	/**
	 * Notes a meta change: this site's capabilities key is the roles, core's profile keys are an
	 * edit, deny-listed keys are nothing, any other key is metadata.
	 *
	 * @param int    $user_id  User id (0 when core deletes a key of every user).
	 * @param string $meta_key Meta key.
	 * @param bool   $deleted  Whether the key was deleted.
	 */
	private function note_meta( int $user_id, string $meta_key, bool $deleted ): void {
		global $wpdb;
		if ( $this->ignored() || ! $user_id || isset( $this->deleted[ $user_id ] ) ) {
			return; // A deleted user's meta goes with it: the delete says it all.
		}
		if ( $wpdb->get_blog_prefix() . 'capabilities' === $meta_key ) {
			$this->on_roles( $user_id );
			return;
		}
		if ( $this->settings->is_meta_denied( $meta_key ) ) {
			return;
		}
		$notes = &$this->touch( $user_id );
		if ( in_array( $meta_key, UserRelay_Facts::PROFILE_META_FIELDS, true ) ) {
			$notes['edit']    = true;
			$notes['profile'] = true;
			return;
		}
		$notes[ $deleted ? 'meta_deleted' : 'meta' ][ $meta_key ] = true;
		unset( $notes[ $deleted ? 'meta' : 'meta_deleted' ][ $meta_key ] );
	}

	/**
	 * Whether hooks should ignore what happens now.
	 */
	private function ignored(): bool {
		return self::$suppressed > 0;
	}

	/**
	 * Whether this request already took notes of a user, or saw them being deleted.
	 *
	 * @param int $user_id User id.
	 */
	public function touched( int $user_id ): bool {
		return isset( $this->users[ $user_id ] ) || isset( $this->deleted[ $user_id ] );
	}

	/**
	 * The notes of a user, made on first touch with the hash seen then (from the cache only:
	 * no query here), unless the caller knows better (UserRelay_Credential_Hooks writes the
	 * password and login notes through it).
	 *
	 * @param int  $user_id    User id.
	 * @param bool $from_cache Whether to take the hash before from the object cache.
	 * @return array Reference to the notes.
	 */
	public function &touch( int $user_id, bool $from_cache = true ): array {
		if ( ! isset( $this->users[ $user_id ] ) ) {
			$hash   = null;
			$cached = $from_cache ? wp_cache_get( $user_id, 'users' ) : false;
			if ( is_object( $cached ) && isset( $cached->user_pass ) ) {
				$hash = (string) $cached->user_pass;
			}
			$this->users[ $user_id ] = array(
				'create'       => false,
				'edit'         => false,
				'profile'      => false,
				'email'        => false,
				'password'     => false,
				'roles'        => false,
				'meta'         => array(),
				'meta_deleted' => array(),
				'hash_before'  => $hash,
				'login_before' => null,
				'at'           => 0.0,
			);
		}
		$this->users[ $user_id ]['at'] = microtime( true );
		return $this->users[ $user_id ];
	}
}
