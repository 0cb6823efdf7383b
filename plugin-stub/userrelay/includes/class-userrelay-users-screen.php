<?php
/**
 * Users → All Users: "Send to partner sites now", as a bulk action and as a row action per user.
 *
 * Each selected user is queued whole through the outbox, as a resend (UserRelay_Snapshot::
 * resend(): actions create, edit, password, roles, metadata), so the relay routes it by each
 * link's rules like any other change; this request's end sends it (UserRelay_Hooks). Privileged
 * users (and, on a network, users of other blogs) are never queued, and the notice says so.
 *
 * Only where the plugin is configured and serves this blog, for those who may edit users
 * (edit_users, and edit_user for each user: on a network, WordPress gives these to the network
 * admin unless a filter says otherwise). The bulk action checks WordPress's own bulk nonce
 * (bulk-users) on load-users.php, before users.php's default branch, which would redirect a
 * request carrying _wp_http_referer and drop the nonce with it; the row action has a nonce per
 * user. The outcome travels back in the redirect as counts only.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * The bulk and row actions of the users list, and their notice.
 */
final class UserRelay_Users_Screen {

	/** The bulk action's value in the users list's action selector. */
	const BULK_ACTION = 'userrelay_send';

	/** The admin-post action of the row action (and, with the user id, its nonce action). */
	const ROW_ACTION = 'userrelay_send_user';

	/** Query arguments that carry the outcome back to the users list. */
	const ARGS = array( 'userrelay_queued', 'userrelay_privileged', 'userrelay_skipped' );

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
	 * Adds the actions, where the plugin is configured and serves this blog.
	 */
	public function register(): void {
		if ( ! $this->settings->is_configured() || ! $this->settings->serves_this_blog() ) {
			return;
		}
		add_filter( 'bulk_actions-users', array( $this, 'bulk_actions' ) );
		add_action( 'load-users.php', array( $this, 'handle_bulk' ) );
		add_filter( 'user_row_actions', array( $this, 'row_actions' ), 10, 2 );
		add_action( 'admin_post_' . self::ROW_ACTION, array( $this, 'handle_row' ) );
		add_action( 'admin_notices', array( $this, 'notice' ) );
	}

	/**
	 * Adds "Send to partner sites now" to the bulk actions.
	 *
	 * @param array<string, string> $actions Bulk actions.
	 * @return array<string, string>
	 */
	public function bulk_actions( $actions ) {
		if ( current_user_can( 'edit_users' ) ) {
			$actions[ self::BULK_ACTION ] = __( 'Send to partner sites now', 'userrelay' );
		}
		return $actions;
	}

	/**
	 * Adds "Send to partner sites now" under a user this site syncs.
	 *
	 * @param array<string, string> $actions Row actions.
	 * @param WP_User               $user    The row's user.
	 * @return array<string, string>
	 */
	public function row_actions( $actions, $user ) {
		if ( ! $user instanceof WP_User || ! current_user_can( 'edit_users' ) || ! current_user_can( 'edit_user', $user->ID ) ) {
			return $actions;
		}
		if ( ! ( new UserRelay_Snapshot( $this->settings ) )->reported( $user ) ) {
			return $actions; // Privileged, or another blog's: never sent.
		}
		$url                            = wp_nonce_url( add_query_arg( array( 'action' => self::ROW_ACTION, 'user' => $user->ID ), admin_url( 'admin-post.php' ) ), self::nonce_action( (int) $user->ID ) );
		$actions['userrelay_send_user'] = sprintf( '<a href="%s">%s</a>', esc_url( $url ), esc_html__( 'Send to partner sites now', 'userrelay' ) );
		return $actions;
	}

	/**
	 * The bulk action, on load-users.php (before users.php handles the request).
	 */
	public function handle_bulk(): void {
		if ( self::BULK_ACTION !== self::requested_action() ) {
			return;
		}
		check_admin_referer( 'bulk-users' );
		if ( ! current_user_can( 'edit_users' ) ) {
			wp_die( esc_html__( 'You are not allowed to send users to partner sites.', 'userrelay' ), '', array( 'response' => 403 ) );
		}
		// phpcs:ignore WordPress.Security.NonceVerification.Recommended -- Checked above (bulk-users).
		$ids = isset( $_GET['users'] ) ? array_map( 'absint', (array) wp_unslash( $_GET['users'] ) ) : array();
		$this->finish( $this->queue( $ids ) );
	}

	/**
	 * The row action, through admin-post.php.
	 */
	public function handle_row(): void {
		$user_id = isset( $_GET['user'] ) ? absint( wp_unslash( $_GET['user'] ) ) : 0; // phpcs:ignore WordPress.Security.NonceVerification.Recommended -- The nonce names the user: checked next.
		check_admin_referer( self::nonce_action( $user_id ) );
		if ( ! current_user_can( 'edit_users' ) || ! current_user_can( 'edit_user', $user_id ) ) {
			wp_die( esc_html__( 'You are not allowed to send this user to partner sites.', 'userrelay' ), '', array( 'response' => 403 ) );
		}
		$this->finish( $this->queue( array( $user_id ) ) );
	}

	/**
	 * Queues each user whole, as a resend, in one INSERT; counts what was queued and why the
	 * rest was not.
	 *
	 * @param int[] $user_ids Selected user ids.
	 * @return array<string, int> Counts, keyed as self::ARGS.
	 */
	public function queue( array $user_ids ): array {
		$snapshot = new UserRelay_Snapshot( $this->settings );
		$events   = array();
		$counts   = array_fill_keys( self::ARGS, 0 );
		foreach ( array_unique( array_filter( $user_ids ) ) as $user_id ) {
			$user  = get_userdata( (int) $user_id );
			$event = $user && current_user_can( 'edit_user', $user->ID ) ? $snapshot->resend( $user ) : null;
			if ( null !== $event ) {
				$events[] = $event;
			} elseif ( $user && ! $this->settings->sync_privileged() && UserRelay_Privileges::is_privileged( $user ) ) {
				++$counts['userrelay_privileged'];
			} else {
				++$counts['userrelay_skipped'];
			}
		}
		$counts['userrelay_queued'] = $events ? $this->outbox->enqueue( $events ) : 0;
		return $counts;
	}

	/**
	 * The notice on the users list after either action.
	 */
	public function notice(): void {
		$screen = function_exists( 'get_current_screen' ) ? get_current_screen() : null;
		// phpcs:ignore WordPress.Security.NonceVerification.Recommended -- Counts to show only.
		if ( ! $screen || 'users' !== $screen->id || ! isset( $_GET['userrelay_queued'] ) || ! current_user_can( 'edit_users' ) ) {
			return;
		}
		$counts = array();
		foreach ( self::ARGS as $arg ) {
			$counts[ $arg ] = isset( $_GET[ $arg ] ) ? absint( wp_unslash( $_GET[ $arg ] ) ) : 0; // phpcs:ignore WordPress.Security.NonceVerification.Recommended -- Counts to show only.
		}
		/* translators: %d: number of users. */
		$text = sprintf( _n( '%d user queued for the partner sites; it is sent now, and each link\'s rules decide where it goes.', '%d users queued for the partner sites; they are sent now, and each link\'s rules decide where they go.', $counts['userrelay_queued'], 'userrelay' ), $counts['userrelay_queued'] );
		if ( $counts['userrelay_privileged'] ) {
			/* translators: %d: number of users. */
			$text .= ' ' . sprintf( _n( '%d privileged user was not queued: privileged users are never synced.', '%d privileged users were not queued: privileged users are never synced.', $counts['userrelay_privileged'], 'userrelay' ), $counts['userrelay_privileged'] );
		}
		if ( $counts['userrelay_skipped'] ) {
			/* translators: %d: number of users. */
			$text .= ' ' . sprintf( _n( '%d user was not queued: not found, not yours to edit, or not a user of this site.', '%d users were not queued: not found, not yours to edit, or not users of this site.', $counts['userrelay_skipped'], 'userrelay' ), $counts['userrelay_skipped'] );
		}
		$level = $counts['userrelay_queued'] ? 'success' : 'warning';
		printf( '<div class="notice notice-%s is-dismissible userrelay-sent"><p>%s</p></div>', esc_attr( $level ), esc_html( $text ) );
	}

	/**
	 * The row action's nonce action for a user.
	 *
	 * @param int $user_id User id.
	 */
	public static function nonce_action( int $user_id ): string {
		return self::ROW_ACTION . '_' . $user_id;
	}

	/**
	 * The bulk action asked for, read as WP_List_Table::current_action() reads it (the users
	 * list is a GET form).
	 */
	private static function requested_action(): string {
		// phpcs:disable WordPress.Security.NonceVerification.Recommended -- Only which action; the handler checks the nonce.
		if ( ! empty( $_GET['filter_action'] ) ) {
			return '';
		}
		foreach ( array( 'action', 'action2' ) as $field ) {
			if ( isset( $_GET[ $field ] ) && '-1' !== $_GET[ $field ] ) {
				return sanitize_key( wp_unslash( $_GET[ $field ] ) );
			}
		}
		// phpcs:enable
		return '';
	}

	/**
	 * Back to the users list with the counts for the notice.
	 *
	 * @param array<string, int> $counts Counts, keyed as self::ARGS.
	 */
	private function finish( array $counts ): void {
		wp_safe_redirect( add_query_arg( $counts, admin_url( 'users.php' ) ) );
		exit;
	}
}
