<?php
/**
 * A multisite network: each blog is a site of its own at the relay (its own site id, key and
 * links, set by the network admin), reporting its own members with their roles on it
 * (docs/adr/0016-multisite.md).
 *
 * Users are shared by the network, so one request may change a user for several blogs: this
 * class takes the notes that only a network has (a user added to a blog, removed from one,
 * their roles changed on one, whichever blog the request runs on), and at the end of the
 * request turns UserRelay_Hooks' notes and its own into each blog's events, written to that
 * blog's outbox under switch_to_blog(): an edit, password or meta change goes to every blog the
 * user belongs to; a role change to the blog it was made on; being added to a blog is a create
 * there; being removed from a blog (wp_delete_user() on a network, or remove_user_from_blog())
 * is a delete there; a network delete (wpmu_delete_user(), which removes the user from each of
 * their blogs first) is a delete on each. Blogs without settings send nothing. Like the hooks,
 * it takes notes only, and nothing while a delivery is applied.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Reports a network's user changes to each blog's relay site.
 */
final class UserRelay_Network {

	/**
	 * Blogs a user was added to in this request: user id => blog id => true.
	 *
	 * @var array<int, array<int, bool>>
	 */
	private $added = array();

	/**
	 * Blogs a user was removed from in this request, with who they were there: user id =>
	 * blog id => identity (as UserRelay_Hooks captures a deleted user).
	 *
	 * @var array<int, array<int, array>>
	 */
	private $removed = array();

	/**
	 * Blogs whose roles of a user changed in this request: user id => blog id => true.
	 *
	 * @var array<int, array<int, bool>>
	 */
	private $roles = array();

	/**
	 * Settings (read for the blog switched to).
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * Outbox (the blog switched to's table).
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
	 * Adds the network's hooks.
	 */
	public function register(): void {
		add_action( 'add_user_to_blog', array( $this, 'on_added' ), 10, 3 );
		add_action( 'remove_user_from_blog', array( $this, 'on_removed' ), 10, 2 );
		add_action( 'added_user_meta', array( $this, 'on_meta' ), 10, 3 );
		add_action( 'updated_user_meta', array( $this, 'on_meta' ), 10, 3 );
		add_action( 'deleted_user_meta', array( $this, 'on_meta' ), 10, 3 );
	}

	/**
	 * A user was added to a blog (their role there is set).
	 *
	 * @param int    $user_id User id.
	 * @param string $role    Role.
	 * @param int    $blog_id Blog id.
	 */
	public function on_added( $user_id, $role, $blog_id ): void {
		if ( ! UserRelay_Hooks::suppressed() ) {
			$this->added[ (int) $user_id ][ (int) $blog_id ] = true;
		}
	}

	/**
	 * A user is about to be removed from a blog (runs switched to it, their roles still there):
	 * who they are, and whether that blog's partners ever heard of them.
	 *
	 * @param int $user_id User id.
	 * @param int $blog_id Blog id.
	 */
	public function on_removed( $user_id, $blog_id ): void {
		if ( UserRelay_Hooks::suppressed() || isset( $this->removed[ (int) $user_id ][ (int) $blog_id ] ) ) {
			return;
		}
		$switched = (int) get_current_blog_id() !== (int) $blog_id;
		if ( $switched ) {
			switch_to_blog( (int) $blog_id );
		}
		try {
			$user = get_userdata( (int) $user_id );
			if ( $user ) {
				$this->removed[ (int) $user_id ][ (int) $blog_id ] = array(
					'done'     => true,
					'at'       => microtime( true ),
					'login'    => (string) $user->user_login,
					'email'    => (string) $user->user_email,
					'roles'    => array_values( (array) $user->roles ), // Their roles on that blog.
					'reported' => $this->settings->is_member( (int) $user_id ) && ( new UserRelay_Snapshot( $this->settings ) )->reported( $user ),
					'versions' => UserRelay_Stored_Versions::of( $user ),
				);
			}
		} finally {
			if ( $switched ) {
				restore_current_blog();
			}
		}
	}

	/**
	 * A user's meta changed: a blog's capabilities key (wp_capabilities for the main blog,
	 * wp_N_capabilities for blog N) is their roles on that blog.
	 *
	 * @param int|int[] $meta_id  Meta row id(s).
	 * @param int       $user_id  User id.
	 * @param string    $meta_key Meta key.
	 */
	public function on_meta( $meta_id, $user_id, $meta_key ): void {
		global $wpdb;
		if ( UserRelay_Hooks::suppressed() || ! $user_id ) {
			return;
		}
		$pattern = '/^' . preg_quote( $wpdb->base_prefix, '/' ) . '(?:(\d+)_)?capabilities$/i';
		if ( preg_match( $pattern, (string) $meta_key, $match ) ) {
			$blog = isset( $match[1] ) && '' !== $match[1] ? (int) $match[1] : (int) get_main_site_id();

			$this->roles[ (int) $user_id ][ $blog ] = true;
		}
	}

	/**
	 * End of the request: each blog's events, from the hooks' notes (per user) and this
	 * class's (per user and blog), into that blog's outbox; then each blog sends what is due.
	 *
	 * @param array<int, array> $users   UserRelay_Hooks' notes per touched user.
	 * @param array<int, array> $origins Origin of a delivery applied to a user in this request.
	 */
	public function report( array $users, array $origins ): void {
		$ids     = array_keys( $users + $this->added + $this->removed + $this->roles );
		$by_blog = array();
		foreach ( $ids as $user_id ) {
			$blogs = get_userdata( $user_id ) ? array_keys( get_blogs_of_user( $user_id ) ) : array();
			$blogs = array_merge( $blogs, array_keys( isset( $this->removed[ $user_id ] ) ? $this->removed[ $user_id ] : array() ) );
			foreach ( array_unique( array_map( 'intval', $blogs ) ) as $blog_id ) {
				$by_blog[ $blog_id ][] = (int) $user_id;
			}
		}
		$here = (int) get_current_blog_id();
		if ( ! isset( $by_blog[ $here ] ) ) {
			$by_blog[ $here ] = array(); // This blog may have events due from earlier requests.
		}
		ksort( $by_blog );
		foreach ( $by_blog as $blog_id => $user_ids ) {
			switch_to_blog( $blog_id );
			try {
				$this->report_blog( $blog_id, $user_ids, $users, $origins );
			} catch ( Throwable $error ) {
				error_log( "UserRelay: reporting to blog {$blog_id} at shutdown failed: " . $error->getMessage() . ' at ' . $error->getFile() . ':' . $error->getLine() );
			} finally {
				restore_current_blog();
			}
		}
		$this->added   = array();
		$this->removed = array();
		$this->roles   = array();
	}

	/**
	 * One blog's events (run switched to it).
	 *
	 * @param int               $blog_id  The blog.
	 * @param int[]             $user_ids Users who belong, or belonged, to it.
	 * @param array<int, array> $users    UserRelay_Hooks' notes per touched user.
	 * @param array<int, array> $origins  Origins of applied deliveries.
	 */
	private function report_blog( int $blog_id, array $user_ids, array $users, array $origins ): void {
		if ( ! $this->settings->is_configured() ) {
			return; // Not connected to a relay: nobody to report to.
		}
		UserRelay_Plugin::maybe_upgrade(); // This blog's tables, if no request was served here yet.
		$notes   = array();
		$deleted = array();
		foreach ( $user_ids as $user_id ) {
			$user_notes = isset( $users[ $user_id ] ) ? $users[ $user_id ] : self::blank();
			$member     = $this->settings->is_member( $user_id );
			if ( ! $member && isset( $this->removed[ $user_id ][ $blog_id ] ) ) {
				if ( ! $user_notes['create'] ) { // Created in this request: nobody heard of them.
					$deleted[ $user_id ] = $this->removed[ $user_id ][ $blog_id ];
				}
				continue;
			}
			if ( ! $member ) {
				continue;
			}
			if ( isset( $this->added[ $user_id ][ $blog_id ] ) ) {
				$user_notes['create'] = true; // New to this blog: its partners get the whole user.
			}
			// Roles are per blog: only a change made on this one is this blog's.
			$user_notes['roles'] = isset( $this->roles[ $user_id ][ $blog_id ] );
			$notes[ $user_id ]   = $user_notes;
		}
		if ( $notes || $deleted ) {
			$events = ( new UserRelay_Snapshot( $this->settings ) )->build( $notes, $deleted, $origins );
			if ( $events ) {
				$this->outbox->enqueue( $events );
			}
		}
		$this->outbox->maybe_kick();
	}

	/**
	 * The notes of a user the hooks did not see change (only their blogs did).
	 */
	private static function blank(): array {
		return array(
			'create'       => false,
			'edit'         => false,
			'profile'      => false,
			'email'        => false,
			'password'     => false,
			'roles'        => false,
			'meta'         => array(),
			'meta_deleted' => array(),
			'hash_before'  => null,
			'login_before' => null,
			'at'           => microtime( true ),
		);
	}
}
